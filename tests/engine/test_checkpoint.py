"""Checkpoints: layout, tolerant loading, atomic writes, DDP unwrapping, EMA and RNG."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from detcli.engine import checkpoint as C
from detcli.engine.checkpoint import LoadReport, load_checkpoint, read_checkpoint, save_checkpoint
from detcli.engine.ema import ModelEMA
from detcli.engine.seed import rng_state, set_rng_state
from detcli.errors import CheckpointError


class Tiny(nn.Module):
    def __init__(self, out: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.cls = nn.Linear(4, out)


def filled(model: nn.Module, value: float) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def test_round_trip_keeps_weights_meta_and_layout(tmp_path):
    model = filled(Tiny(), 0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    path = save_checkpoint(tmp_path / "a.pth", model, optimizer=opt,
                           meta={"epoch": 2, "iter": 10, "classes": ["a", "b", "c"]})
    raw = torch.load(path, weights_only=True)  # plain data only: loadable without pickle code
    assert set(raw) == {"meta", "state_dict", "optimizer", "rng"}
    assert raw["meta"]["epoch"] == 2 and raw["meta"]["det_version"] and raw["meta"]["time"]
    other = filled(Tiny(), 0.0)
    report = load_checkpoint(path, other)
    assert report.exact and report.num_loaded == 4
    assert report.meta["classes"] == ["a", "b", "c"]
    assert torch.equal(other.cls.weight, torch.full((3, 4), 0.5))


def test_shape_mismatch_is_skipped_and_listed(tmp_path):
    save_checkpoint(tmp_path / "a.pth", filled(Tiny(out=3), 1.0))
    model = filled(Tiny(out=5), 0.0)
    model.extra = nn.Linear(2, 2)
    report = load_checkpoint(tmp_path / "a.pth", model)
    assert report.mismatched == [("cls.weight", (3, 4), (5, 4)), ("cls.bias", (3,), (5,))]
    assert report.missing == ["extra.weight", "extra.bias"]  # mismatched keys are listed apart
    assert report.unexpected == []
    assert torch.equal(model.body.weight, torch.ones(4, 4))  # the rest loaded
    assert torch.equal(model.cls.weight, torch.zeros(5, 4))  # the mismatched left alone
    assert "  skipped cls.weight: shape [3, 4] in the checkpoint, [5, 4] in the model" in report.lines()
    with pytest.raises(CheckpointError, match="does not fit the model exactly"):
        load_checkpoint(tmp_path / "a.pth", Tiny(out=5), strict=True)


def test_mmdetection_layout_and_bare_state_dicts_load(tmp_path):
    state = filled(Tiny(), 2.0).state_dict()
    # MMDetection: meta with numpy values (not weights-only loadable), DDP "module." prefixes
    torch.save({"meta": {"epoch": 12, "CLASSES": ("a",), "seed": np.int64(0)},
                "state_dict": {f"module.{k}": v for k, v in state.items()},
                "optimizer": {}}, tmp_path / "mmdet.pth")
    model = Tiny()
    report = load_checkpoint(tmp_path / "mmdet.pth", model)
    assert report.exact and report.meta["epoch"] == 12
    torch.save(state, tmp_path / "bare.pth")
    report = load_checkpoint(tmp_path / "bare.pth", Tiny())
    assert report.exact and report.meta == {}


def test_missing_corrupt_and_foreign_files_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth does not exist"):
        read_checkpoint(tmp_path / "nope.pth")
    save_checkpoint(tmp_path / "good.pth", Tiny())
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth cannot be read"):
        read_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="text.pth cannot be read"):
        read_checkpoint(tmp_path / "text.pth")
    torch.save({"epoch": 3}, tmp_path / "nodict.pth")
    with pytest.raises(CheckpointError, match="has no state_dict"):
        read_checkpoint(tmp_path / "nodict.pth")


def test_a_crash_mid_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "latest.pth"
    save_checkpoint(path, filled(Tiny(), 1.0), meta={"epoch": 1})
    real_save = torch.save

    def crash(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(100)  # half-written file, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(C.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, filled(Tiny(), 9.0), meta={"epoch": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["meta"]["epoch"] == 1
    assert not (tmp_path / "latest.pth.tmp").exists()
    assert torch.equal(read_checkpoint(path)["state_dict"]["body.weight"], torch.ones(4, 4))


def test_ddp_wrapper_is_unwrapped(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(Tiny())
        save_checkpoint(tmp_path / "a.pth", ddp)
    finally:
        dist.destroy_process_group()
    keys = set(read_checkpoint(tmp_path / "a.pth")["state_dict"])
    assert keys == {"body.weight", "body.bias", "cls.weight", "cls.bias"}


def test_ema_weights_are_the_state_dict_and_training_weights_are_kept(tmp_path):
    model = filled(Tiny(), 1.0)
    ema = ModelEMA(model)
    filled(ema.module, 0.25)
    ema.updates = 7
    save_checkpoint(tmp_path / "a.pth", model, ema=ema)
    ckpt = read_checkpoint(tmp_path / "a.pth")
    assert torch.equal(ckpt["state_dict"]["cls.bias"], torch.full((3,), 0.25))
    assert torch.equal(ckpt["ema"]["train_state_dict"]["cls.bias"], torch.ones(3))
    assert ckpt["ema"]["updates"] == 7


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    torch.save(rng_state(), tmp_path / "rng.pt")
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    restored = set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert restored[:3] == ["python", "numpy", "torch"]
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_load_report_lines_name_everything():
    report = LoadReport("x.pth", missing=["a"], unexpected=["b"], mismatched=[("c", (1,), (2,))],
                        num_loaded=3)
    assert report.lines() == [
        "loaded 3 tensors from x.pth",
        "  skipped c: shape [1] in the checkpoint, [2] in the model",
        "  missing in the checkpoint (1): a",
        "  not used by the model (1): b",
    ]
