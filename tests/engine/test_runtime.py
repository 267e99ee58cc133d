"""``runtime``: channels_last by device, torch.compile of the network only, both wired into
the train step and ``det train``.

torch.compile runs here with ``backend = "aot_eager"`` (dynamo + AOTAutograd, no code
generation): inductor needs a C++ compiler and took about 4 minutes for the tiny model on
this 2-core machine, too long for a test. The trainer test uses ``"eager"`` (dynamo only),
which is enough to show the switch reaches the model.
"""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from detcli.config.loader import load_config
from detcli.engine.runtime import (
    RuntimeConfig,
    compile_network,
    memory_format,
    prepare_network,
    uses_channels_last,
)
from detcli.engine.train_step import LossForward, TrainStep
from detcli.engine.trainer import train_detector
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.structures.batch import DetTargets, ImageBatch

CPU, CUDA = torch.device("cpu"), torch.device("cuda", 0)
SMALL = ["model.backbone.base_channels=8", "model.neck.out_channels=32",
         "model.bbox_head.feat_channels=32", "model.bbox_head.stacked_convs=1"]


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_detector(load_config("retinanet_tiny_synth", SMALL).cfg.model)
    model.init_weights()
    return model


def batch() -> tuple[ImageBatch, DetTargets]:
    images = ImageBatch.from_tensor(torch.randn(2, 3, 96, 128, generator=torch.Generator()
                                                .manual_seed(0)))
    targets = DetTargets.from_lists([torch.tensor([[10.0, 10, 60, 60]]),
                                     torch.tensor([[20.0, 30, 100, 90], [0, 0, 30, 40]])],
                                    [torch.tensor([0]), torch.tensor([1, 2])])
    return images, targets


def test_channels_last_auto_is_on_for_cuda_only() -> None:
    assert uses_channels_last("auto", CUDA) and not uses_channels_last("auto", CPU)
    assert uses_channels_last(True, CPU) and not uses_channels_last(False, CUDA)
    assert memory_format(RuntimeConfig(), CUDA) is torch.channels_last
    assert memory_format(RuntimeConfig(), CPU) is torch.contiguous_format


def test_runtime_is_a_typed_config_table() -> None:
    cfg = load_config("retinanet_tiny_synth").cfg
    assert cfg.runtime == RuntimeConfig(channels_last="auto", compile=False,
                                        compile_backend="inductor")
    cfg = load_config("retinanet_tiny_synth", ["runtime.channels_last=false",
                                               "runtime.compile=true"]).cfg
    assert cfg.runtime.channels_last is False and cfg.runtime.compile is True
    with pytest.raises(ValidationError, match="channels_last"):
        RuntimeConfig(channels_last="always")
    with pytest.raises(ValidationError, match="compile_backend"):
        RuntimeConfig(compile_backend="tensorrt")


def test_channels_last_weights_and_inputs_give_the_same_detections() -> None:
    model = tiny_model().eval()
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(0.0)  # scores about 0.5: detections to compare
    images, _ = batch()
    reference = model.predict_batch(images)
    prepare_network(model, RuntimeConfig(channels_last=True), CPU)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    got = model.predict_batch(images)
    assert torch.equal(got.num_dets, reference.num_dets) and int(got.num_dets.min()) > 0
    torch.testing.assert_close(got.boxes, reference.boxes, rtol=0, atol=1e-3)
    torch.testing.assert_close(got.scores, reference.scores, rtol=0, atol=1e-4)


def test_train_step_feeds_the_network_its_memory_format() -> None:
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, images, targets):
            seen.append(images.tensor.is_contiguous(memory_format=torch.channels_last))
            return {"loss": self.w * images.tensor.mean()}

    images, targets = batch()
    module = Recorder()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    TrainStep(module, optimizer, device=CPU)(images, targets)
    TrainStep(module, optimizer, device=CPU, memory_format=torch.channels_last)(images, targets)
    assert seen == [False, True]


# on one thread 3-6 s (measured on the shared 2-core machine), on two 7-13 s: the threads wait
# on each other (tests/engine/conftest.py's one_thread); the same steps and comparison either way
@pytest.mark.usefixtures("one_thread")
def test_compiled_network_trains_as_the_eager_one() -> None:
    images, targets = batch()
    eager, compiled = tiny_model().train(), tiny_model().train()
    compile_network(compiled, backend="aot_eager")
    with pytest.raises(ConfigError, match="already compiled"):
        compile_network(compiled, backend="aot_eager")
    assert compiled.forward.__func__._torchdynamo_orig_callable is type(compiled).forward
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints unchanged

    steps = {}
    for name, model in (("eager", eager), ("compiled", compiled)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        step = TrainStep(LossForward(model), optimizer, device=CPU)
        steps[name] = [step(images, targets), step(images, targets)]  # second: updated weights
    for first, second in zip(*steps.values()):
        for key in ("loss_cls", "loss_bbox"):
            torch.testing.assert_close(first[key], second[key], rtol=1e-5, atol=1e-6)


def test_a_copy_of_a_compiled_model_runs_its_own_weights() -> None:
    images, _ = batch()
    compiled = compile_network(tiny_model(), backend="eager")  # the binding, not the backend
    copied = copy.deepcopy(compiled)  # as the EMA hook copies the model
    with torch.no_grad():
        for param in copied.parameters():
            param.zero_()
    out, original = copied(images.tensor), compiled(images.tensor)
    assert out.cls_logits[0].abs().max() == 0 and original.cls_logits[0].abs().max() > 0


def test_det_train_compile_reaches_the_trainer(tiny_config, tmp_path, one_thread) -> None:
    loaded = tiny_config("runner.max_epochs=1", "data.val=false", "runtime.compile=true",
                         "runtime.compile_backend=eager")
    result = train_detector(loaded, work_dir=tmp_path, device="cpu")
    assert result.stop_reason == "finished"
    log = (tmp_path / "train.log").read_text()
    assert "network on cpu: contiguous (NCHW), compiled (eager)" in log


def test_det_train_compile_flag_sets_runtime_compile(tiny_config_path, tmp_path,
                                                     one_thread) -> None:
    from typer.testing import CliRunner

    from detcli.cli.main import app

    result = CliRunner().invoke(app, [
        "train", str(tiny_config_path), "--work-dir", str(tmp_path), "--device", "cpu",
        "--compile", "--set", "runtime.compile_backend=eager", "--set", "runner.max_epochs=1",
        "--set", "data.val=false"])
    assert result.exit_code == 0, result.output
    assert "compiled (eager)" in (tmp_path / "train.log").read_text()
    assert "compile = true" in (tmp_path / "config.toml").read_text()
