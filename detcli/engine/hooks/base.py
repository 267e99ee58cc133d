"""The hook mechanism: objects the trainer calls at fixed points of a run.

Points, in the order a run meets them::

    before_run
      before_epoch
        before_iter -> (train step) -> after_iter      # once per iteration
        on_log(record)                                 # every log_config.interval iterations
      after_epoch
        on_eval_progress(done, total)                  # as an evaluation runs (images done)
        on_eval(metrics)                               # after each evaluation
    after_run

Every method receives the trainer (:class:`~detcli.engine.trainer.Trainer`), whose ``state``
says where the run is. At each point hooks run by ascending ``priority`` (MMCV's scale: 0
highest, 100 lowest; ties keep their order): EMA updates before anything saves or evaluates,
checkpoints are written before evaluation (which may write ``best``), early stopping reads the
evaluation, and loggers and display callbacks come last. A hook that raises stops training;
an ``after_run`` runs only when the run completed.

A config adds hooks by ``type`` under ``custom_hooks`` (and ``log_config.hooks``); each
registered class pairs with a config model in :mod:`detcli.engine.config` and is built with
``HOOKS.build(cfg)``. Callbacks passed to ``train_detector`` are hooks too. A hook with
``state_dict()`` / ``load_state_dict(state)`` (early stopping's counters) has its state saved
in every checkpoint (``meta.hooks``, by class name) and restored by ``--resume``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from detcli.engine.trainer import Trainer

HIGHEST, VERY_HIGH, HIGH, ABOVE_NORMAL, NORMAL = 0, 10, 30, 40, 50
BELOW_NORMAL, LOW, VERY_LOW, LOWEST = 60, 70, 90, 100


class Hook:
    """A no-op at every point; subclasses override what they need."""

    priority: int = NORMAL

    def before_run(self, trainer: Trainer) -> None:
        pass

    def after_run(self, trainer: Trainer) -> None:
        pass

    def before_epoch(self, trainer: Trainer) -> None:
        pass

    def after_epoch(self, trainer: Trainer) -> None:
        pass

    def before_iter(self, trainer: Trainer) -> None:
        pass

    def after_iter(self, trainer: Trainer) -> None:
        pass

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """A metrics record: a train interval (``mode = "train"``) or an evaluation (``"val"``)."""

    def on_eval_progress(self, trainer: Trainer, done: int, total: int) -> None:
        """An evaluation has done ``done`` of its ``total`` images (this rank's share)."""

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        """The metrics of an evaluation, on every rank."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(priority={self.priority})"


class HookList:
    """Hooks sorted by priority; ``call(point, trainer, *args)`` runs them in that order."""

    def __init__(self, hooks: Iterable[Hook] = ()) -> None:
        self.hooks: list[Hook] = []
        for hook in hooks:
            self.add(hook)

    def add(self, hook: Hook) -> None:
        index = len(self.hooks)
        while index > 0 and self.hooks[index - 1].priority > hook.priority:
            index -= 1
        self.hooks.insert(index, hook)

    def call(self, point: str, trainer: Trainer, *args: Any) -> None:
        for hook in self.hooks:
            getattr(hook, point)(trainer, *args)

    def find(self, kind: type) -> list[Hook]:
        return [h for h in self.hooks if isinstance(h, kind)]

    def __iter__(self):
        return iter(self.hooks)

    def __len__(self) -> int:
        return len(self.hooks)
