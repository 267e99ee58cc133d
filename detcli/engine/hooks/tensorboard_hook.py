"""``TensorboardLoggerHook``: every record's numbers as TensorBoard scalars (optional).

``log_config.hooks = [{ type = "TextLoggerHook" }, { type = "TensorboardLoggerHook" }]``, as
in MMDetection. Each ``on_log`` record becomes scalars tagged ``<mode>/<key>`` at step
``iter``: ``train/loss_cls``, ``train/loss``, ``train/lr``, ``train/grad_norm``, ``train/time``,
... every log interval and ``val/bbox_mAP``, ... after each evaluation, written with
``torch.utils.tensorboard.SummaryWriter`` into ``log_dir`` (default ``tf_logs``, MMDetection's
name; a relative path is inside the work dir). Rank 0 only. Like ``metrics.jsonl``, the
folder reads as one run: a resumed run purges the events logged after its checkpoint's
iteration, a new run those of an earlier run there (TensorBoard's ``purge_step``).

The ``tensorboard`` package is an optional extra (``pip install 'detcli[tensorboard]'``); the
hook checks for it when it is built, before training starts, and raises a
:class:`~detcli.errors.ConfigError` naming the extra when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detcli.analysis.train_logs import POSITION_KEYS
from detcli.engine.config import TensorboardLoggerHookConfig
from detcli.engine.context import VERY_LOW, Hook, TrainContext
from detcli.errors import ConfigError
from detcli.registry import HOOKS

EXTRA = "pip install 'detcli[tensorboard]'"


def summary_writer_class() -> type:
    """``torch.utils.tensorboard.SummaryWriter``; a ConfigError naming the extra when the
    optional ``tensorboard`` package is missing (imported here, lazily, for that reason)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("log_config.hooks: TensorboardLoggerHook needs the tensorboard "
                          f"package, which is not installed ({exc})",
                          hint=f"{EXTRA}, or take TensorboardLoggerHook out of "
                               "log_config.hooks") from exc
    return SummaryWriter


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The record's numbers as ``{"<mode>/<key>": value}`` (not its position: epoch, iter)."""
    mode = record.get("mode", "train")
    return {f"{mode}/{k}": float(v) for k, v in record.items()
            if k not in POSITION_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


@HOOKS.register(TensorboardLoggerHookConfig)
class TensorboardLoggerHook(Hook):
    """Writes every record's numbers to a TensorBoard event file (module docstring)."""

    priority = VERY_LOW

    def __init__(self, *, log_dir: str = "tf_logs") -> None:
        self.log_dir = log_dir
        self.writer_class = summary_writer_class()  # at build time: a missing extra stops here
        self.writer: Any = None

    def path(self, work_dir: Path) -> Path:
        """Where the events go: ``log_dir``, inside ``work_dir`` when relative."""
        return work_dir / self.log_dir

    def before_run(self, ctx: TrainContext) -> None:
        if not ctx.dist.is_main:
            return
        # TensorBoard hides the folder's earlier events from this step on: a new run's (step
        # 1) hide those of a run that stopped there before its first checkpoint, a resumed
        # run's those logged after its checkpoint
        self.writer = self.writer_class(log_dir=str(self.path(ctx.work_dir)),
                                        purge_step=ctx.state.iter + 1)

    def on_log(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=record["iter"])

    def on_eval(self, ctx: TrainContext, metrics: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.flush()

    def after_run(self, ctx: TrainContext) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
