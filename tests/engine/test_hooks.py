"""Hook ordering, checkpoint pruning and ``latest.pth``, early stopping, the text log line."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from detcli.engine.config import EarlyStoppingHookConfig
from detcli.engine.hooks import EarlyStoppingHook, Hook, HookList
from detcli.engine.hooks.checkpoint_hook import point_latest, prune
from detcli.engine.hooks.logger import format_record
from detcli.errors import ConfigError
from detcli.registry import HOOKS


def test_hooks_run_by_priority_then_insertion_order():
    calls = []

    class Named(Hook):
        def __init__(self, name, priority):
            self.name, self.priority = name, priority

        def after_iter(self, trainer):
            calls.append(self.name)

    hooks = HookList([Named("low", 90), Named("a", 50), Named("high", 10), Named("b", 50)])
    hooks.call("after_iter", None)
    assert calls == ["high", "a", "b", "low"]


def test_prune_keeps_the_newest_and_latest_points_at_the_last(tmp_path):
    for n in (1, 2, 3, 10):
        (tmp_path / f"epoch_{n}.pth").write_text(str(n))
    (tmp_path / "best_bbox_mAP.pth").write_text("best")
    removed = prune(tmp_path, "epoch", keep=2)
    assert sorted(p.name for p in removed) == ["epoch_1.pth", "epoch_2.pth"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_bbox_mAP.pth", "epoch_10.pth",
                                                          "epoch_3.pth"]
    assert prune(tmp_path, "epoch", keep=-1) == []
    latest = point_latest(tmp_path / "epoch_10.pth")
    assert latest.read_text() == "10"
    latest = point_latest(tmp_path / "epoch_3.pth")  # replaced, not appended
    assert latest.read_text() == "3" and not (tmp_path / ".latest.pth.tmp").exists()


@dataclass
class FakeState:
    stop_reason: str | None = None


@dataclass
class FakeTrainer:
    state: FakeState = field(default_factory=FakeState)


def test_early_stopping_counts_evaluations_without_improvement():
    hook = HOOKS.build(EarlyStoppingHookConfig(monitor="bbox_mAP", patience=2, min_delta=0.01))
    trainer = FakeTrainer()
    for value in (0.10, 0.20, 0.205, 0.21):  # +0.005, +0.01: neither beats 0.20 by > 0.01
        assert trainer.state.stop_reason is None
        hook.on_eval(trainer, {"bbox_mAP": value})
    assert trainer.state.stop_reason == ("early stopping: bbox_mAP has not improved on 0.2000 "
                                         "for 2 evaluations")
    assert hook.state_dict() == {"best": 0.20, "wait": 2}


def test_early_stopping_threshold_rule_and_unknown_metric():
    hook = EarlyStoppingHook(monitor="val_loss", stopping_threshold=0.5)  # "loss": less is better
    trainer = FakeTrainer()
    hook.on_eval(trainer, {"val_loss": 0.9})
    hook.on_eval(trainer, {"val_loss": 0.4})
    assert "reached stopping_threshold 0.5" in trainer.state.stop_reason
    with pytest.raises(ConfigError, match="monitor = 'bbox_mAP_90' is not an evaluation metric; "
                                          "the evaluation gives: bbox_mAP"):
        EarlyStoppingHook(monitor="bbox_mAP_90").on_eval(FakeTrainer(), {"bbox_mAP": 0.1,
                                                                           "per_class": []})


def test_text_log_line():
    record = {"mode": "train", "epoch": 2, "iter": 30, "inner_iter": 5, "iters_per_epoch": 25,
              "lr": 0.01, "eta_s": 3725.0, "time": 0.25, "data_time": 0.01, "img_per_s": 32.0,
              "memory": 812.4, "loss_cls": 0.81234, "loss_bbox": 0.4, "loss": 1.21234}
    assert format_record(record) == (
        "Epoch [2][5/25]  lr: 1.000e-02, eta: 1:02:05, time: 0.250, data_time: 0.010, "
        "img/s: 32.0, memory: 812MB, loss_cls: 0.8123, loss_bbox: 0.4000, loss: 1.2123")
    val = {"mode": "val", "epoch": 2, "iter": 50, "bbox_mAP": 0.5, "bbox_mAP_50": 0.75}
    assert format_record(val) == "Epoch(val) [2][iter 50]  bbox_mAP: 0.5000, bbox_mAP_50: 0.7500"
