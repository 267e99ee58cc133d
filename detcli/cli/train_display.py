"""The live display of ``det train``: a rich progress bar fed by the trainer's hook points.

On a terminal (and unless ``--json``), rank 0 shows one bar over all iterations of the run:
the epoch, iterations done of all, elapsed time, ETA, and the last log record's losses, lr,
images/s and memory; the text-log lines the bar repeats are kept off the terminal meanwhile
(they still go to ``train.log``), and each evaluation prints one line above the bar. Off a
terminal it does nothing: the log lines are the progress.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from detcli.cli.common import err_console
from detcli.engine.hooks import Hook
from detcli.engine.hooks.base import LOWEST
from detcli.engine.hooks.logger import format_seconds


def loss_text(record: dict[str, Any]) -> str:
    """``loss 0.8123  cls 0.5000  bbox 0.3123  lr 1.00e-02  32.0 img/s  812 MB``."""
    parts = [f"{'loss' if k == 'loss' else k.removeprefix('loss_')} {v:.4f}"
             for k, v in record.items() if k.startswith("loss") and isinstance(v, float)]
    parts += [f"lr {record['lr']:.2e}", f"{record['img_per_s']:.1f} img/s"]
    if record.get("memory") is not None:
        parts.append(f"{record['memory']:.0f} MB")
    return "  ".join(parts)


class _DropTrainLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "detcli.train"


class RichProgress(Hook):
    """The bar; call :meth:`close` when the run ends, however it ends."""

    priority = LOWEST

    def __init__(self, quiet: bool = False) -> None:
        self.live = not quiet and err_console.is_terminal
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"),
                            TextColumn("{task.fields[losses]}"), console=err_console,
                            disable=not self.live)
        self.task: Any = None
        self.filter = _DropTrainLines()

    @staticmethod
    def _title(state: Any) -> str:
        if state.by_epoch:
            return f"epoch {min(state.epoch + 1, state.max_epochs)}/{state.max_epochs}"
        return "iterations"

    def before_run(self, trainer: Any) -> None:
        # what the run restored is on the terminal already: the trainer logs it
        if not self.live or not trainer.dist.is_main:
            return
        for handler in logging.getLogger("detcli").handlers:
            handler.addFilter(self.filter)
        self.bar.start()
        state = trainer.state
        self.task = self.bar.add_task(self._title(state), total=state.max_iters,
                                      completed=state.iter, eta="?", losses="")

    def after_iter(self, trainer: Any) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=1, description=self._title(trainer.state))

    def on_log(self, trainer: Any, record: dict[str, Any]) -> None:
        if self.task is not None and record.get("mode") == "train":
            self.bar.update(self.task, losses=loss_text(record),
                            eta=format_seconds(record.get("eta_s") or 0))

    def on_eval(self, trainer: Any, metrics: dict[str, Any]) -> None:
        if self.task is not None:
            self.bar.console.print(
                f"epoch {trainer.state.epoch}: bbox_mAP {metrics.get('bbox_mAP', -1):.4f}, "
                f"bbox_mAP_50 {metrics.get('bbox_mAP_50', -1):.4f}", highlight=False)

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None
        for handler in logging.getLogger("detcli").handlers:
            handler.removeFilter(self.filter)
