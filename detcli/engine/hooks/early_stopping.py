"""``EarlyStoppingHook``: stop when the monitored metric stops improving.

After each evaluation, the metric ``monitor`` improves when it beats the best so far by more
than ``min_delta`` (greater is better, or less with ``rule = "less"`` or a name containing
"loss"). After ``patience`` evaluations in a row without improvement, or as soon as it reaches
``stopping_threshold``, the hook sets ``ctx.state.stop_reason``; the trainer finishes the
epoch's hooks and ends the run (writing a last checkpoint if that epoch had none). Its counters
travel in checkpoints, so a resumed run keeps counting (a checkpoint written before its
epoch's evaluation holds the counters before it; the resumed run redoes that evaluation).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from detcli.engine.config import EarlyStoppingHookConfig
from detcli.engine.context import NORMAL, Hook, TrainContext
from detcli.errors import ConfigError
from detcli.registry import HOOKS

log = logging.getLogger(__name__)


@HOOKS.register(EarlyStoppingHookConfig)
class EarlyStoppingHook(Hook):
    """Watches ``monitor`` in every evaluation; see the module docstring."""

    priority = NORMAL - 2  # after evaluation (its on_eval runs inside the evaluation)

    def __init__(self, *, monitor: str = "bbox_mAP", rule: str | None = None, min_delta: float = 0.0,
                 patience: int = 5, stopping_threshold: float | None = None) -> None:
        self.monitor = monitor
        self.greater = (rule or ("less" if "loss" in monitor else "greater")) == "greater"
        self.min_delta = min_delta
        self.patience = patience
        self.stopping_threshold = stopping_threshold
        self.best: float | None = None
        self.wait = 0

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        return value > self.best + self.min_delta if self.greater else value < self.best - self.min_delta

    def _reached(self, value: float) -> bool:
        if self.stopping_threshold is None:
            return False
        return value >= self.stopping_threshold if self.greater else value <= self.stopping_threshold

    def on_eval(self, ctx: TrainContext, metrics: dict[str, Any]) -> None:
        if self.monitor not in metrics:
            names = ", ".join(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise ConfigError(f"EarlyStoppingHook monitor = {self.monitor!r} is not an evaluation "
                              f"metric; the evaluation gives: {names}")
        value = float(metrics[self.monitor])
        if not math.isfinite(value):
            ctx.state.stop_reason = f"early stopping: {self.monitor} is {value}"
            return
        if self._reached(value):
            ctx.state.stop_reason = (f"early stopping: {self.monitor} = {value:.4f} reached "
                                         f"stopping_threshold {self.stopping_threshold}")
            return
        if self._improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        log.info("%s = %.4f, no better than %.4f for %d of %d evaluations", self.monitor, value,
                 self.best, self.wait, self.patience)
        if self.wait >= self.patience:
            ctx.state.stop_reason = (f"early stopping: {self.monitor} has not improved on "
                                         f"{self.best:.4f} for {self.wait} evaluations")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state.get("best"), int(state.get("wait", 0))
