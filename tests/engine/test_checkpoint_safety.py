"""Loading a checkpoint never runs code from it, MMDetection's numpy and MMEngine objects still
load, and NaN / infinite weights are refused by everything that evaluates, predicts or exports.

A payload is an object whose ``__reduce__`` makes unpickling call something that creates a
marker file (``os.system('touch ...')``, ``exec``, a bound ``Path.touch``): what a malicious
``.pth`` does. Each test checks that the marker is NOT there afterwards; a control checks that
plain ``pickle`` would create it, so the payloads are live.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import (
    check_finite_weights,
    load_checkpoint,
    non_finite_weights,
    read_checkpoint,
    save_checkpoint,
)
from detcli.engine.safe_load import Placeholder, allowed_globals
from detcli.errors import CheckpointError
from detcli.inference import Detector
from detcli.models.build import build_detector
from tests.engine.conftest import tiny_config_text

CLASSES = ["square", "circle", "triangle"]


class Payload:
    """Unpickles as a call that creates ``marker``."""

    def __init__(self, marker: Path, how: str = "system") -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return os.system, (f"touch {self.marker}",)
        if self.how == "exec":
            return exec, (f"open({str(self.marker)!r}, 'w').close()",)
        return self.marker.touch, ()  # a bound method: getattr(PosixPath(...), 'touch')


@pytest.mark.parametrize("how", ["system", "exec", "touch"])
def test_the_payloads_are_live(tmp_path, how):
    marker = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(Payload(marker, how)))  # what a full unpickler does
    assert marker.exists()


@pytest.mark.parametrize("how", ["system", "exec", "touch"])
def test_a_payload_in_meta_never_runs_and_the_weights_load(tmp_path, how):
    marker = tmp_path / "MARKER"
    model = torch.nn.Linear(2, 3)
    torch.save({"meta": {"epoch": 1, "note": Payload(marker, how)},
                "state_dict": model.state_dict()}, tmp_path / "evil.pth")
    ckpt = read_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()
    assert torch.equal(ckpt["state_dict"]["weight"], model.weight.detach())
    assert ckpt["meta"]["epoch"] == 1
    note = ckpt["meta"]["note"]
    assert isinstance(note, Placeholder)
    target = {"system": "posix.system", "exec": "builtins.exec", "touch": "builtins.getattr"}[how]
    assert note.target == target
    if how == "system":
        assert note.args == (f"touch {marker}",)  # recorded, never called

    other = torch.nn.Linear(2, 3)
    report = load_checkpoint(tmp_path / "evil.pth", other)
    assert not marker.exists()
    assert report.exact and torch.equal(other.bias, model.bias)
    assert report.placeholders == [("meta.note", target)]
    assert (f"  kept as inert placeholders, never built or run (1): meta.note ({target})"
            in report.lines())


def test_a_payload_as_the_file_or_as_a_weight_is_a_checkpoint_error(tmp_path):
    marker = tmp_path / "MARKER"
    torch.save(Payload(marker), tmp_path / "whole.pth")
    with pytest.raises(CheckpointError, match=r"whole.pth holds a posix.system object \(not "
                                              r"built: det never runs code"):
        read_checkpoint(tmp_path / "whole.pth")
    torch.save({"state_dict": {"w": torch.ones(1), "v": Payload(marker)}}, tmp_path / "value.pth")
    with pytest.raises(CheckpointError, match="1 state_dict value.s. are not tensors; the first, "
                                              "v, is a posix.system object"):
        read_checkpoint(tmp_path / "value.pth")
    torch.save({"state_dict": Payload(marker)}, tmp_path / "sd.pth")
    with pytest.raises(CheckpointError, match="state_dict is a posix.system object"):
        read_checkpoint(tmp_path / "sd.pth")
    torch.save({"state_dict": {"w": torch.ones(1)}, "meta": Payload(marker)}, tmp_path / "m.pth")
    with pytest.raises(CheckpointError, match="meta is a posix.system object"):
        read_checkpoint(tmp_path / "m.pth")
    assert not marker.exists()


def test_torchs_environment_switches_do_not_open_a_way_in(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"
    torch.save({"meta": {"note": Payload(marker)}, "state_dict": {"w": torch.ones(1)}},
               tmp_path / "evil.pth")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # only where weights_only unset
    assert read_checkpoint(tmp_path / "evil.pth")["meta"]["note"].target == "posix.system"
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")  # the second pass is refused
    with pytest.raises(CheckpointError, match="evil.pth cannot be read"):
        read_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_legacy_format_and_protocol_4_files_are_read_the_same_way(tmp_path):
    marker = tmp_path / "MARKER"
    ckpt = {"meta": {"note": Payload(marker)}, "state_dict": {"w": torch.arange(3.0)}}
    torch.save(ckpt, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    with pytest.warns(UserWarning, match="pickle protocol 4"):  # torch's, on protocol 4
        torch.save(ckpt, tmp_path / "p4.pth", pickle_protocol=4)
        loaded_p4 = read_checkpoint(tmp_path / "p4.pth")
    for loaded in (read_checkpoint(tmp_path / "legacy.pth"), loaded_p4):
        assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
        assert loaded["meta"]["note"].target == "posix.system"
    assert not marker.exists()


def _fake_module(monkeypatch, name: str, **attrs) -> None:
    """``name`` (and its parents) in sys.modules, holding ``attrs``: pickle can save them."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]),
                            types.ModuleType(".".join(parts[:i])))
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)


def test_mmdetection_checkpoint_with_numpy_and_mmengine_objects_loads(tmp_path, monkeypatch):
    marker = tmp_path / "MARKER"  # the fake classes create it if their code ever runs on load

    def setstate(self, state):
        marker.touch()

    history_buffer = type("HistoryBuffer", (), {"__module__": "mmengine.logging.history_buffer",
                                                "__setstate__": setstate})
    config_dict = type("ConfigDict", (dict,), {"__module__": "mmengine.config.config",
                                               "__setitem__": lambda s, k, v: marker.touch()})
    _fake_module(monkeypatch, "mmengine.logging.history_buffer", HistoryBuffer=history_buffer)
    _fake_module(monkeypatch, "mmengine.config.config", ConfigDict=config_dict)
    buffer = history_buffer()
    buffer.__dict__.update(_log_history=np.array([0.75, 0.5]), _count_history=np.array([1, 1]),
                           max_length=1000000)
    cfg = config_dict()
    dict.__setitem__(cfg, "lr", 0.02)
    model = torch.nn.Linear(2, 2)
    torch.save({
        "meta": {"mmengine_version": "0.10.4", "epoch": 12, "iter": 21984, "seed": np.int64(42),
                 "lr": np.float64(0.02), "ratios": np.array([0.5, 1.0, 2.0]),
                 "dtype": np.dtype("float32"), "cfg": cfg,
                 "dataset_meta": {"classes": ("cat", "dog"), "palette": [(220, 20, 60)]}},
        "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
        "message_hub": {"log_scalars": {"train/loss": buffer}, "runtime_info": {"epoch": 12}},
        "optimizer": {"state": {}, "param_groups": []},
    }, tmp_path / "mmdet.pth")
    assert not marker.exists()  # saving ran none of it

    other = torch.nn.Linear(2, 2)
    report = load_checkpoint(tmp_path / "mmdet.pth", other)  # the fake modules are importable
    assert not marker.exists()
    assert report.exact and torch.equal(other.weight, model.weight)
    meta = report.meta
    assert type(meta["seed"]) is np.int64 and meta["seed"] == 42
    assert type(meta["lr"]) is np.float64 and meta["lr"] == 0.02
    assert np.array_equal(meta["ratios"], [0.5, 1.0, 2.0]) and meta["dtype"] == np.float32
    assert meta["classes"] == ["cat", "dog"]  # from dataset_meta.classes
    assert isinstance(meta["cfg"], Placeholder) and meta["cfg"].items == {"lr": 0.02}
    assert report.placeholders == [
        ("meta.cfg", "mmengine.config.config.ConfigDict"),
        ("message_hub.log_scalars.train/loss", "mmengine.logging.history_buffer.HistoryBuffer")]
    loaded = read_checkpoint(tmp_path / "mmdet.pth")["message_hub"]["log_scalars"]["train/loss"]
    assert loaded.target == "mmengine.logging.history_buffer.HistoryBuffer"
    assert np.array_equal(loaded.state["_log_history"], [0.75, 0.5])  # numpy intact inside


def test_mmdetection_2_meta_with_numpy_only_needs_no_placeholder(tmp_path):
    torch.save({"meta": {"CLASSES": ("a", "b"), "hook_msgs": {"best_score": np.float64(0.5)}},
                "state_dict": {"w": torch.ones(2)}}, tmp_path / "v2.pth")
    with pytest.raises(pickle.UnpicklingError):  # torch's plain weights-only load refuses it
        torch.load(tmp_path / "v2.pth", weights_only=True)
    report = load_checkpoint(tmp_path / "v2.pth", torch.nn.Module())
    assert report.placeholders == [] and report.meta["classes"] == ["a", "b"]
    assert report.meta["hook_msgs"]["best_score"] == 0.5


def test_the_allow_list_is_torchs_weights_only_list_plus_numpy():
    allowed = allowed_globals()
    assert allowed["torch._utils._rebuild_tensor_v2"] is torch._utils._rebuild_tensor_v2
    assert allowed["numpy.ndarray"] is np.ndarray
    for name in ("builtins.exec", "builtins.eval", "builtins.getattr", "posix.system",
                 "os.system", "subprocess.Popen", "builtins.__import__"):
        assert name not in allowed


# ---- non-finite weights -----------------------------------------------------------------


def test_non_finite_weights_are_counted_per_tensor():
    state = {"a": torch.tensor([1.0, float("nan"), float("inf"), float("nan")]),
             "b": torch.ones(3), "c": torch.tensor([1, 2]), "d": torch.tensor([-float("inf")])}
    assert non_finite_weights(state) == [("a", 2, 1), ("d", 0, 1)]
    with pytest.raises(CheckpointError, match=r"x.pth has non-finite weights in 2 of 4 tensors: "
                                              r"a \(2 NaN, 1 infinite of 4\), d \(0 NaN, 1 "
                                              r"infinite of 1\)"):
        check_finite_weights(state, "x.pth")
    check_finite_weights({"b": torch.ones(3)}, "x.pth")  # finite: nothing raised
    big = torch.full((2,), 3e38)  # finite, but its sum overflows to inf
    half = torch.tensor([1.0, float("nan")], dtype=torch.float16)
    assert non_finite_weights({"big": big, "half": half}) == [("half", 1, 0)]


# ---- every entry point -------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(config, folder of images, checkpoint with a payload in meta, whole-file payload,
    NaN checkpoint, the marker the payloads would create)."""
    root = tmp_path_factory.mktemp("safety")
    synth = make_synthetic_dataset(root / "synth", num_train=4, num_val=2, image_size=64, seed=3)
    config = root / "tiny.toml"
    config.write_text(tiny_config_text(synth))
    marker = root / "MARKER"
    torch.manual_seed(0)
    model = build_detector(load_config(config).cfg.model)
    save_checkpoint(root / "meta_payload.pth", model, rng=False,
                    meta={"classes": CLASSES, "note": Payload(marker)})
    torch.save(Payload(marker), root / "payload.pth")
    with torch.no_grad():
        model.bbox_head.retina_cls.weight[0, 0, 0, 0] = float("nan")
    nan = save_checkpoint(root / "nan.pth", model, meta={"classes": CLASSES}, rng=False)
    return config, synth.img_prefix("val"), root / "meta_payload.pth", root / "payload.pth", \
        nan, marker


def entry_point_args(name: str, config: Path, images: Path, checkpoint: Path, out: Path):
    return {
        "test": ["test", config, checkpoint, "--device", "cpu"],
        "predict": ["predict", config, checkpoint, images, "--out", out, "--device", "cpu"],
        "export": ["export", "onnx", config, checkpoint, "--out", out / "m.onnx"],
        "resume": ["train", config, "--work-dir", out, "--device", "cpu", "--resume", checkpoint],
        "init_from": ["train", config, "--work-dir", out, "--device", "cpu",
                      "--init-from", checkpoint, "--set", "runner.max_epochs=1"],
    }[name]


def invoke(args: list) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("entry", ["test", "predict", "export", "resume", "init_from"])
def test_a_payload_checkpoint_exits_4_through_every_command_and_never_runs(setup, entry,
                                                                           tmp_path):
    config, images, _, payload, _, marker = setup
    result = invoke(entry_point_args(entry, config, images, payload, tmp_path))
    assert not marker.exists()
    assert result.exit_code == 4, result.output
    assert "payload.pth holds a posix.system object (not built: det never runs code from a " \
           "checkpoint), not a dict" in result.output
    assert "Traceback" not in result.output


def test_a_payload_in_meta_is_reported_and_det_test_runs(setup):
    config, _, meta_payload, _, _, marker = setup
    result = invoke(["test", config, meta_payload, "--device", "cpu"])
    assert not marker.exists()
    assert result.exit_code == 0, result.output
    logged = " ".join(result.output.split())  # the log handler wraps long lines
    assert "kept as inert placeholders, never built or run (1): meta.note (posix.system)" in logged
    assert "COCO bbox metrics" in result.stdout


def test_detector_from_checkpoint_never_runs_a_payload(setup):
    config, _, meta_payload, payload, _, marker = setup
    with pytest.raises(CheckpointError, match="holds a posix.system object"):
        Detector.from_checkpoint(config, payload, device="cpu")
    detector = Detector.from_checkpoint(config, meta_payload, device="cpu")
    assert detector.classes == CLASSES
    assert not marker.exists()


@pytest.mark.parametrize("entry", ["test", "predict", "export"])
def test_nan_weights_exit_4_naming_the_tensor_and_the_file(setup, entry, tmp_path):
    config, images, _, _, nan, _ = setup
    result = invoke(entry_point_args(entry, config, images, nan, tmp_path))
    assert result.exit_code == 4, result.output
    assert f"checkpoint {nan} has non-finite weights in 1 of" in result.output
    assert "bbox_head.retina_cls.weight (1 NaN, 0 infinite of" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_detector_from_checkpoint_refuses_nan_weights(setup):
    config, _, _, _, nan, _ = setup
    with pytest.raises(CheckpointError, match="bbox_head.retina_cls.weight .1 NaN"):
        Detector.from_checkpoint(config, nan, device="cpu")
