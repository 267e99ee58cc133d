"""The engine's ``LoggerHook`` (``metrics.jsonl``) and the configurable ``TextLoggerHook``.

A record is one dict: every ``log_config.interval`` iterations a ``"train"`` record (epoch,
iter, lr, each loss, time and data_time in seconds per iteration, img_per_s, memory in MB,
eta_s) and after each evaluation a ``"val"`` record (its metrics). ``LoggerHook`` appends
each as one JSON line to ``work_dir/metrics.jsonl`` (emptied when a new run starts there; a resumed run keeps the
records up to its checkpoint and drops those of the work done after it, which the resumed run
redoes, so the file reads as one uninterrupted run; ``train.log`` keeps every line);
``TextLoggerHook`` (``log_config.hooks``)
writes it as one readable line to the ``detcli.train`` logger, which the trainer also sends to
``work_dir/train.log``. Rank 0 only.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from detcli.engine.config import TextLoggerHookConfig
from detcli.engine.context import VERY_LOW, Hook, TrainContext
from detcli.errors import writing
from detcli.registry import HOOKS
from detcli.text import is_loss_key

train_log = logging.getLogger("detcli.train")
METRIC_PREFIXES = ("bbox_", "voc_")  # the evaluation keys the val line shows (COCO, VOC)


def _round(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    return value


class LoggerHook(Hook):
    """Appends every record to ``metrics.jsonl`` as one JSON line."""

    priority = VERY_LOW

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def before_run(self, ctx: TrainContext) -> None:
        """A new run starts the file afresh; a resumed one keeps what its checkpoint holds."""
        if not ctx.dist.is_main:
            return
        if ctx.restored.kind not in ("resume", "extend"):
            with writing(self.path, "the metrics log"):
                self.path.write_text("", encoding="utf-8")
        else:
            self._truncate(ctx.state.iter, keep_last_eval=not ctx.eval_pending)

    def _truncate(self, done: int, keep_last_eval: bool) -> None:
        """Keep the records of iterations ``<= done`` (the evaluation at ``done`` only when
        ``keep_last_eval``); drop later ones and any line a kill cut short."""
        if not self.path.exists():
            return
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                it = int(record["iter"])
            except (ValueError, KeyError, TypeError):
                dropped += 1
                continue
            if it < done or (it == done and (record.get("mode") != "val" or keep_last_eval)):
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            tmp = self.path.with_name(self.path.name + ".tmp")
            with writing(self.path, "the metrics log"):
                tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
                tmp.replace(self.path)
            logging.getLogger(__name__).info(
                "%s: dropped %d record(s) after iteration %d, work the interrupted run did after "
                "its checkpoint (train.log keeps them)", self.path.name, dropped, done)

    def on_log(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if not ctx.dist.is_main:
            return
        line = json.dumps({k: v for k, v in record.items() if k != "per_class"}, default=str)
        with writing(self.path, "the metrics log"), open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def format_record(record: dict[str, Any]) -> str:
    """One line: ``Epoch [2][10/25]  lr: 1.000e-02, loss_cls: 0.8123, ...`` (MMCV's layout)."""
    if record.get("mode") == "val":
        metrics = ", ".join(f"{k}: {v:.4f}" for k, v in record.items()
                            if k.startswith(METRIC_PREFIXES) and isinstance(v, float))
        return f"Epoch(val) [{record['epoch']}][iter {record['iter']}]  {metrics}"
    where = f"Epoch [{record['epoch']}][{record['inner_iter']}/{record['iters_per_epoch']}]"
    parts = [f"lr: {record['lr']:.3e}"]
    if record.get("eta_s") is not None:
        parts.append(f"eta: {format_seconds(record['eta_s'])}")
    parts += [f"time: {record['time']:.3f}", f"data_time: {record['data_time']:.3f}",
              f"img/s: {record['img_per_s']:.1f}"]
    if record.get("memory") is not None:
        parts.append(f"memory: {record['memory']:.0f}MB")
    parts += [f"{k}: {v:.4f}" for k, v in record.items()
              if (is_loss_key(k) or k == "grad_norm") and isinstance(v, float)]
    return f"{where}  " + ", ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


@HOOKS.register(TextLoggerHookConfig)
class TextLoggerHook(Hook):
    """Writes every record as one line of text to the ``detcli.train`` logger."""

    priority = VERY_LOW

    def on_log(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if ctx.dist.is_main:
            train_log.info("%s", format_record(record))
