"""MMDetection's checkpoint files, 2.x and 3.x layouts, written here as those versions write them
(``meta.CLASSES`` / ``meta.dataset_meta.classes``, numpy values in ``meta``, an optimizer, 2.x's
Python config text, 3.x's ``message_hub`` with MMEngine objects), through every way det reads a
trained model: ``Detector.from_checkpoint``, ``det test``, ``det predict``, ``det export onnx``
and ``--init-from``. The classes come from the file's meta, a tensor the model does not use is
named, and ``det predict CHECKPOINT`` without a config says why MMDetection's config is not
used."""

from __future__ import annotations

import dataclasses
import sys
import types

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import read_checkpoint, save_checkpoint
from detcli.inference import Detector
from detcli.models.build import build_detector
from tests.engine.conftest import tiny_config_text

CLASSES = ("box", "ball", "cone")  # not the synthetic set's: only the file names them
UNUSED = "bbox_head.extra_conv.weight"  # a tensor of an older head layout: named, not loaded


def mmdet2_file(state: dict) -> dict:
    return {"meta": {"mmdet_version": "2.28.2", "CLASSES": CLASSES, "epoch": 12,
                     "iter": 87936, "seed": np.int64(0), "time": "Mon Jan  9 10:00:00 2023",
                     "config": "model = dict(type='RetinaNet', bbox_head=dict(num_classes=3))\n",
                     "hook_msgs": {"best_score": np.float64(0.37), "last_ckpt": "epoch_12.pth"}},
            "state_dict": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.02, "params": [0, 1]}]}}


def mmdet3_file(state: dict, history_buffer: type) -> dict:
    buffer = history_buffer()
    buffer.__dict__.update(_log_history=np.array([0.9, 0.7]), _count_history=np.array([1, 1]))
    return {"meta": {"mmengine_version": "0.10.4", "epoch": 12, "iter": 87936,
                     "seed": np.int64(0), "experiment_name": "retinanet_r50_fpn_1x_coco",
                     "dataset_meta": {"classes": CLASSES, "palette": [(220, 20, 60)] * 3}},
            "state_dict": state,
            "message_hub": {"log_scalars": {"train/loss": buffer},
                            "runtime_info": {"epoch": 12, "iter": 87936}},
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.02, "params": [0, 1]}]},
            "param_schedulers": [{"last_epoch": 12, "base_values": [0.02]}]}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(config, val images, {layout: checkpoint file}); det's own file of the same weights
    under "det"."""
    root = tmp_path_factory.mktemp("mmdet_files")
    synth = make_synthetic_dataset(root / "synth", num_train=4, num_val=2, image_size=64, seed=3)
    config = root / "tiny.toml"
    config.write_text(tiny_config_text(synth))
    torch.manual_seed(0)
    model = build_detector(load_config(config).cfg.model)
    with torch.no_grad():  # untrained scores sit at the prior 0.01: some boxes must pass 0.05
        model.bbox_head.retina_cls.bias.normal_(0, 1)
    state = {**model.state_dict(), UNUSED: torch.zeros(2)}
    # MMEngine's HistoryBuffer, pickled by reference: a module that exists only while saving
    module = types.ModuleType("mmengine.logging.history_buffer")
    buffer_class = type("HistoryBuffer", (), {"__module__": module.__name__})
    module.HistoryBuffer = buffer_class
    saved = {name: sys.modules.get(name) for name in
             ("mmengine", "mmengine.logging", "mmengine.logging.history_buffer")}
    sys.modules.update({"mmengine": types.ModuleType("mmengine"),
                        "mmengine.logging": types.ModuleType("mmengine.logging"),
                        module.__name__: module})
    try:
        torch.save(mmdet3_file(state, buffer_class), root / "mmdet3.pth")
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old
    torch.save(mmdet2_file(state), root / "mmdet2.pth")
    save_checkpoint(root / "det.pth", model, meta={"classes": list(CLASSES)}, rng=False)
    return config, synth.img_prefix("val"), {k: root / f"{k}.pth" for k in
                                             ("mmdet2", "mmdet3", "det")}


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("layout", ["mmdet2", "mmdet3"])
def test_the_meta_classes_and_weights_reach_the_detector(files, layout):
    config, _, paths = files
    assert read_checkpoint(paths[layout])["meta"]["classes"] == list(CLASSES)
    detector = Detector.from_checkpoint(config, paths[layout], device="cpu", score_thr=0.0)
    assert detector.classes == list(CLASSES)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    expected = Detector.from_checkpoint(config, paths["det"], device="cpu", score_thr=0.0)
    ours, theirs = detector(image), expected(image)
    assert len(ours) > 0
    assert torch.equal(ours.boxes, theirs.boxes) and torch.equal(ours.scores, theirs.scores)


@pytest.mark.parametrize("layout", ["mmdet2", "mmdet3"])
def test_det_test_runs_and_names_the_unused_tensor(files, layout):
    config, _, paths = files
    result = invoke("test", config, paths[layout], "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert UNUSED in result.output and "not used by the model" in " ".join(result.output.split())
    assert "COCO bbox metrics" in result.stdout


@pytest.mark.parametrize("layout", ["mmdet2", "mmdet3"])
def test_det_predict_and_export_read_the_files(files, layout, tmp_path):
    config, images, paths = files
    predicted = invoke("predict", config, paths[layout], images, "--device", "cpu", "--json")
    assert predicted.exit_code == 0, predicted.output
    exported = invoke("export", "onnx", config, paths[layout], "--out", tmp_path / "m.onnx")
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "m.onnx").is_file()


def test_init_from_an_mmdetection_3_file(files, tmp_path):
    config, _, paths = files
    result = invoke("train", config, "--work-dir", tmp_path, "--device", "cpu", "--init-from",
                    paths["mmdet3"], "--set", "runner.max_epochs=1")
    assert result.exit_code == 0, result.output
    assert "weights only" in result.output


def test_predict_without_a_config_says_mmdetections_is_not_executed(files):
    _, images, paths = files
    result = invoke("predict", paths["mmdet2"], images, "--device", "cpu")
    assert result.exit_code == 4, result.output
    assert "MMDetection's Python config, which det does not execute" in result.output


# ---- mmdet://NAME: every command resolves it through detcli.zoo.mmdet.checkpoint_file -------

@pytest.fixture
def zoo_name(files, tmp_path, monkeypatch):
    """``mmdet://tiny_fake``: a zoo entry whose file (the 3.x layout one) sits in a temporary
    torch hub cache and whose det preset is the tiny config; nothing can be downloaded."""
    import detcli.zoo.mmdet as zoo

    config, _, paths = files
    item = zoo.ZooEntry("tiny_fake", "retinanet", str(config),
                        "http://127.0.0.1:9/tiny_fake_20250101-0123abcd.pth", "0123abcd", 1.0, None)
    monkeypatch.setitem(zoo.ENTRIES, item.name, item)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(zoo, "download", lambda *a: pytest.fail("the file is cached"))
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / item.file_name).write_bytes(paths["mmdet3"].read_bytes())
    return "mmdet://tiny_fake"


def test_detector_from_an_mmdet_name_alone(files, zoo_name):
    config, _, paths = files
    detector = Detector.from_checkpoint(zoo_name, score_thr=0.0)  # the entry's preset, meta classes
    assert detector.classes == list(CLASSES)
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    expected = Detector.from_checkpoint(config, paths["det"], score_thr=0.0)(image)
    assert len(expected) > 0 and torch.equal(detector(image).boxes, expected.boxes)


def test_det_test_predict_and_export_take_an_mmdet_name(files, zoo_name, tmp_path):
    config, images, _ = files
    tested = invoke("test", config, zoo_name, "--device", "cpu", "--json")
    assert tested.exit_code == 0, tested.output
    predicted = invoke("predict", zoo_name, images, "--device", "cpu", "--json")
    assert predicted.exit_code == 0, predicted.output
    assert '"classes": [\n    "box",\n    "ball",\n    "cone"\n  ]' in predicted.stdout
    with_config = invoke("predict", config, zoo_name, images, "--device", "cpu", "--json")
    assert with_config.exit_code == 0, with_config.output
    exported = invoke("export", "onnx", config, zoo_name, "--out", tmp_path / "m.onnx",
                      "--no-verify")
    assert exported.exit_code == 0, exported.output


def test_a_zoo_file_under_its_own_name_needs_no_config(files, zoo_name, tmp_path):
    _, images, paths = files
    local = tmp_path / "tiny_fake_20250101-0123abcd.pth"  # as downloaded by hand
    local.write_bytes(paths["mmdet3"].read_bytes())
    predicted = invoke("predict", local, images, "--device", "cpu", "--json")
    assert predicted.exit_code == 0, predicted.output


def test_a_zoo_entry_without_a_preset_says_to_import_its_config(files, zoo_name, monkeypatch):
    import detcli.zoo.mmdet as zoo

    _, images, _ = files
    monkeypatch.setitem(zoo.ENTRIES, "tiny_fake",
                        dataclasses.replace(zoo.ENTRIES["tiny_fake"], preset=None))
    result = invoke("predict", zoo_name, images, "--device", "cpu")
    assert result.exit_code == 4, result.output
    assert "MMDetection's tiny_fake, which has no det preset" in " ".join(result.output.split())
    assert "det config import" in result.output
