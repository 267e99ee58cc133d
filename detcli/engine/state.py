"""Where a training run is (:class:`TrainState`) and what it did (:class:`TrainResult`).

``epoch`` and ``iter`` count what is done: 0 before the first iteration, ``epoch = 3`` once
three epochs are trained. An epoch-based run of E epochs with I iterations per epoch has
``max_iters = E * I``; an iteration-based run counts passes over the data in ``epoch`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.engine.resume import RestoreReport


@dataclass
class TrainState:
    """Where a run is; hooks read it and set ``stop_reason`` to end the run early."""

    by_epoch: bool
    max_iters: int
    iters_per_epoch: int
    max_epochs: int | None = None
    epoch: int = 0
    iter: int = 0
    inner_iter: int = 0  # iterations done in the current epoch
    metrics: dict[str, Any] | None = None  # the last evaluation
    metrics_iter: int = -1  # the iteration it was made at
    best: dict[str, Any] | None = None  # {"metric", "value", "epoch", "iter", "path"}
    stop_reason: str | None = None  # set to end the run early

    @property
    def finished(self) -> bool:
        if self.by_epoch:
            return self.epoch >= (self.max_epochs or 0)
        return self.iter >= self.max_iters


@dataclass
class TrainResult:
    """What a run did; the CLI renders it."""

    work_dir: Path
    epoch: int
    iter: int
    stop_reason: str  # "finished", "already finished" or "early stopping: ..."
    restored: RestoreReport
    metrics: dict[str, Any] | None = None  # the last evaluation
    best: dict[str, Any] | None = None
    checkpoints: list[Path] = field(default_factory=list)  # periodic ones still on disk
    history: list[dict[str, Any]] = field(default_factory=list)  # every log record
    val_gt_per_class: list[int] = field(default_factory=list)  # GT boxes per class, val set

    @property
    def latest(self) -> Path | None:
        path = self.work_dir / "latest.pth"
        return path if path.exists() else None
