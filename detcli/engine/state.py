"""Where a training run is (:class:`TrainState`), when it ends (its :class:`StopRule`), what it
took from a checkpoint (:class:`RestoreReport`) and what it did (:class:`TrainResult`).

``epoch`` and ``iter`` count what is done: 0 before the first iteration, ``epoch = 3`` once
three epochs are trained. An epoch-based run of E epochs with I iterations per epoch has
``max_iters = E * I``; an iteration-based run counts passes over the data in ``epoch`` too.

The two kinds of run share one loop (:func:`detcli.engine.trainer.train_loop`) and differ only
in their stop rule: :class:`EpochBased` ends at the end of epoch E and counts log intervals
inside each epoch; :class:`IterBased` ends after iteration ``max_iters`` (inside an epoch, as
soon as it is reached) and counts log intervals over the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from detcli.engine.checkpoint import LoadReport


class StopRule(Protocol):
    """When a run is finished, and which count its log interval is taken of."""

    by_epoch: ClassVar[bool]
    unit: ClassVar[str]  # "epoch" or "iteration": what the limit counts

    @property
    def max_epochs(self) -> int | None: ...

    @property
    def limit(self) -> int: ...

    def max_iters(self, iters_per_epoch: int) -> int: ...

    def done(self, state: TrainState) -> int:
        """The epochs (iterations) ``state`` has done, as the limit counts them."""
        ...

    def log_count(self, state: TrainState) -> int:
        """The iteration count the log interval divides."""
        ...


@dataclass(frozen=True)
class EpochBased:
    """``max_epochs`` epochs (``runner.type = "EpochBasedRunner"``)."""

    max_epochs: int
    by_epoch: ClassVar[bool] = True
    unit: ClassVar[str] = "epoch"

    @property
    def limit(self) -> int:
        return self.max_epochs

    def max_iters(self, iters_per_epoch: int) -> int:
        return self.max_epochs * iters_per_epoch

    def done(self, state: TrainState) -> int:
        return state.epoch

    def log_count(self, state: TrainState) -> int:
        return state.inner_iter


@dataclass(frozen=True)
class IterBased:
    """``limit`` iterations (``runner.type = "IterBasedRunner"``, ``runner.max_iters``)."""

    limit: int
    by_epoch: ClassVar[bool] = False
    unit: ClassVar[str] = "iteration"

    @property
    def max_epochs(self) -> int | None:
        return None

    def max_iters(self, iters_per_epoch: int) -> int:
        return self.limit

    def done(self, state: TrainState) -> int:
        return state.iter

    def log_count(self, state: TrainState) -> int:
        return state.iter


@dataclass
class TrainState:
    """Where a run is; hooks read it and set ``stop_reason`` to end the run early."""

    rule: StopRule
    iters_per_epoch: int
    epoch: int = 0
    iter: int = 0
    inner_iter: int = 0  # iterations done in the current epoch
    metrics: dict[str, Any] | None = None  # the last evaluation
    metrics_iter: int = -1  # the iteration it was made at
    best: dict[str, Any] | None = None  # {"metric", "value", "epoch", "iter", "path"}
    stop_reason: str | None = None  # set to end the run early

    @property
    def by_epoch(self) -> bool:
        return self.rule.by_epoch

    @property
    def max_epochs(self) -> int | None:
        return self.rule.max_epochs

    @property
    def max_iters(self) -> int:
        return self.rule.max_iters(self.iters_per_epoch)

    @property
    def finished(self) -> bool:
        return self.rule.done(self) >= self.rule.limit

    @property
    def log_count(self) -> int:
        return self.rule.log_count(self)


@dataclass
class RestoreReport:
    """What a run took from a checkpoint before its first iteration."""

    kind: str  # "resume", "extend", "init_from" or "new"
    path: str | None = None
    restored: list[str] = field(default_factory=list)  # what came back, one item each
    notes: list[str] = field(default_factory=list)  # what did not, and why
    load: LoadReport | None = None  # the weights load, for init_from
    already_finished: bool = False
    first_notes: list[str] = field(default_factory=list)  # what explains the load: before it

    def lines(self) -> list[str]:
        titles = {"resume": "resuming from", "extend": "extending the finished run of",
                  "init_from": "initialising weights from", "new": "new run"}
        head = f"{titles[self.kind]} {self.path}" if self.path else titles[self.kind]
        out = [head] + [f"  note: {note}" for note in self.first_notes]
        out += [f"  restored {item}" for item in self.restored]
        if self.load is not None:
            out += self.load.lines()[1:]
        return out + [f"  note: {note}" for note in self.notes]


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
