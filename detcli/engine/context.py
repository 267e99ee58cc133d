"""The training context (:class:`TrainContext`) and the hooks that receive it.

N images per batch, R processes.

A run builds one :class:`TrainContext` (:func:`detcli.engine.build.build_context`) and hands it
to every hook at fixed points, in the order a run meets them::

    before_run
      before_epoch
        before_iter -> (train step) -> after_iter      # once per iteration
        on_log(record)                                 # every log_config.interval iterations
      after_epoch
        on_eval_progress(done, total)                  # as an evaluation runs (images done)
        on_eval(metrics)                               # after each evaluation
    after_run

What a hook may change is written on the context's fields: ``state`` (``stop_reason`` ends the
run; the evaluation hook sets ``metrics`` and ``best``), ``ema`` (the EMA hook sets it in
``before_run``); the rest is read-only to hooks. The resume (:mod:`detcli.engine.resume`)
fills ``resumed_ema``, ``resumed_rng`` and ``eval_pending`` before ``before_run``.

At each point hooks run by ascending ``priority`` (MMCV's scale: 0 highest, 100 lowest; ties
keep their order): EMA updates before anything saves or evaluates, checkpoints are written
before evaluation (which may write ``best``), early stopping reads the evaluation, and loggers
and display callbacks come last. A hook that raises stops training; an ``after_run`` runs only
when the run completed.

A config adds hooks by ``type`` under ``custom_hooks`` (and ``log_config.hooks``); each
registered class pairs with a config model in :mod:`detcli.engine.config` and is built with
``HOOKS.build(cfg)``. Callbacks passed to ``train_detector`` are hooks too. A hook whose
``state_dict()`` is not None (early stopping's counters) has it saved in every checkpoint
(``meta.hooks``, by class name) and given back to ``load_state_dict`` by ``--resume``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from detcli.engine import distributed as D
from detcli.engine.checkpoint import save_checkpoint
from detcli.engine.ema import ModelEMA
from detcli.engine.lr_schedule import LrScheduler
from detcli.engine.seed import rng_state
from detcli.engine.state import RestoreReport, TrainState

HIGHEST, VERY_HIGH, HIGH, ABOVE_NORMAL, NORMAL = 0, 10, 30, 40, 50
BELOW_NORMAL, LOW, VERY_LOW, LOWEST = 60, 70, 90, 100


class Hook:
    """A no-op at every point; subclasses override what they need."""

    priority: int = NORMAL

    def before_run(self, ctx: TrainContext) -> None:
        pass

    def after_run(self, ctx: TrainContext) -> None:
        pass

    def before_epoch(self, ctx: TrainContext) -> None:
        pass

    def after_epoch(self, ctx: TrainContext) -> None:
        pass

    def before_iter(self, ctx: TrainContext) -> None:
        pass

    def after_iter(self, ctx: TrainContext) -> None:
        pass

    def on_log(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        """A metrics record: a train interval (``mode = "train"``) or an evaluation (``"val"``)."""

    def on_eval_progress(self, ctx: TrainContext, done: int, total: int) -> None:
        """An evaluation has done ``done`` of its ``total`` images (this rank's share)."""

    def on_eval(self, ctx: TrainContext, metrics: dict[str, Any]) -> None:
        """The metrics of an evaluation, on every rank."""

    def evaluates_at(self, state: TrainState) -> bool:
        """Whether this hook evaluates at the point ``state`` is at (a checkpoint written there
        before it records the evaluation as pending)."""
        return False

    def state_dict(self) -> dict[str, Any] | None:
        """What a checkpoint keeps of this hook; None: nothing."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` gave (``--resume``)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(priority={self.priority})"


class HookList:
    """Hooks sorted by priority; ``call(point, ctx, *args)`` runs them in that order."""

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks: list[Hook] = []
        for hook in hooks:
            self.add(hook)

    def add(self, hook: Hook) -> None:
        index = len(self.hooks)
        while index > 0 and self.hooks[index - 1].priority > hook.priority:
            index -= 1
        self.hooks.insert(index, hook)

    def call(self, point: str, ctx: TrainContext, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, point)(ctx, *args)

    def find(self, kind: type[Hook]) -> list[Hook]:
        return [h for h in self.hooks if isinstance(h, kind)]

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.hooks)

    def __len__(self) -> int:
        return len(self.hooks)


@dataclass
class TrainContext:
    """Everything a training run's hooks see; built once per run, before the first hook."""

    cfg: Any  # the run's DetConfig (detcli.config.root imports every hook, so not named here)
    config_text: str  # the resolved config, as checkpoints keep it
    work_dir: Path
    device: torch.device
    dist: D.DistInfo
    state: TrainState
    train_dataset: Dataset
    val_dataset: Dataset | None  # None: the run does not evaluate (no data.val)
    loader: DataLoader  # the training batches, (seed, epoch, rank)-ordered
    model: nn.Module  # the network being trained (never the DDP wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: LrScheduler
    scaler: torch.amp.GradScaler | None  # fp16 only
    hooks: HookList
    history: list[dict[str, Any]] = field(default_factory=list)  # every log record
    restored: RestoreReport = field(default_factory=lambda: RestoreReport("new"))
    ema: ModelEMA | None = None  # set by an EMAHook in before_run
    # set by the resume before ``before_run``:
    resumed_ema: tuple[dict, dict] | None = None  # (EMA state, averaged weights)
    resumed_rng: dict[str, Any] | None = None  # this rank's generators
    eval_pending: bool = False  # the resumed checkpoint was saved before its evaluation

    @property
    def evaluates(self) -> bool:
        return self.val_dataset is not None

    def emit_log(self, record: dict[str, Any]) -> None:
        """Keep ``record`` in the history and hand it to every hook's ``on_log``."""
        self.history.append(record)
        self.hooks.call("on_log", self, record)

    def save_checkpoint(self, path: Path) -> Path:
        """Everything a resume needs, at ``path`` (atomic, written by rank 0). Every rank
        calls it: the random generators of all ranks are gathered into the checkpoint."""
        rng = D.all_gather_object(rng_state())  # (R,) one state per rank
        if not self.dist.is_main:
            return path
        state = self.state
        hook_states = {type(h).__name__: s for h in self.hooks if (s := h.state_dict()) is not None}
        pending = state.metrics_iter != state.iter and any(h.evaluates_at(state)
                                                           for h in self.hooks)
        meta = {"epoch": state.epoch, "iter": state.iter, "max_epochs": state.max_epochs,
                "max_iters": state.max_iters, "config": self.config_text,
                "classes": list(self.train_dataset.CLASSES), "seed": self.cfg.seed,
                "world_size": self.dist.world_size, "best": state.best,
                "metrics": state.metrics, "metrics_iter": state.metrics_iter,
                "evaluation_pending": pending, "hooks": hook_states,
                "loader": {"epoch": state.epoch, "batch": state.iter - state.epoch
                           * state.iters_per_epoch, "batches_per_epoch": state.iters_per_epoch}}
        return save_checkpoint(path, self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                               scaler=self.scaler, ema=self.ema, meta=meta, rng=rng)
