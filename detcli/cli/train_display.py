"""The live display of ``det train``: a rich progress bar fed by the trainer's hook points.

On a terminal (and unless ``--json``), rank 0 shows one bar over all iterations of the run and,
on the line below, the last log record's losses, lr, images/s and memory::

    epoch 3/12 ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━  120/480 0:00:40 eta 0:02:00
    loss 0.8123  cls 0.5000  bbox 0.3123  lr 1.00e-02  32.0 img/s  812 MB

The first line fits 80 columns and the bar grows with the terminal; the loss line wraps rather
than pushing the bar out. The ETA is live: after every iteration, the run's seconds per
iteration so far (evaluations included) times the iterations left. An evaluation during
training shows its own bar (``evaluating``, images done of all) under the first; its result is
printed as one line above the bar. The text-log lines the bar repeats are kept off the terminal
meanwhile (they still go to ``train.log``). Off a terminal it does nothing: the log lines are
the progress.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Iterable

from rich.console import Console, Group, RenderableType
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.text import Text

from detcli.cli.common import err_console
from detcli.engine.context import LOWEST, Hook, TrainContext
from detcli.engine.hooks.logger import format_seconds
from detcli.text import is_loss_key

HEADLINE_METRICS = ("bbox_mAP", "bbox_mAP_50", "voc_mAP")  # shown after each evaluation, if given


def loss_text(record: dict[str, Any]) -> str:
    """``loss 0.8123  cls 0.5000  bbox 0.3123  lr 1.00e-02  32.0 img/s  812 MB``."""
    parts = [f"{'loss' if k == 'loss' else k.replace('loss_', '')} {v:.4f}"  # s0.loss_cls: s0.cls
             for k, v in record.items() if is_loss_key(k) and isinstance(v, float)]
    parts += [f"lr {record['lr']:.2e}", f"{record['img_per_s']:.1f} img/s"]
    if record.get("memory") is not None:
        parts.append(f"{record['memory']:.0f} MB")
    return "  ".join(parts)


class _DropTrainLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "detcli.train"


class _TrainBar(Progress):
    """The bars, then the loss line (a rich Progress renders a table; the line goes under it)."""

    losses = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield Group(self.make_tasks_table(self.tasks), Text(self.losses, overflow="fold"))


class RichProgress(Hook):
    """The bar; call :meth:`close` when the run ends, however it ends."""

    priority = LOWEST

    def __init__(self, quiet: bool = False, *, console: Console | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        console = console or err_console
        self.live = not quiet and console.is_terminal
        self.clock = clock
        self.bar = _TrainBar(TextColumn("{task.description}"), BarColumn(bar_width=None),
                             MofNCompleteColumn(), TextColumn("{task.fields[times]}"),
                             console=console, disable=not self.live, get_time=clock)
        self.task: TaskID | None = None
        self.eval_task: TaskID | None = None
        self.filter = _DropTrainLines()
        self._start = 0.0
        self._start_iter = 0
        self._state: Any = None

    @staticmethod
    def _title(state: Any) -> str:
        if state.by_epoch:
            return f"epoch {min(state.epoch + 1, state.max_epochs)}/{state.max_epochs}"
        return "iterations"

    def _times(self, state: Any) -> str:
        """``0:00:40 eta 0:02:00``: elapsed in this run; seconds per iteration times those left."""
        elapsed = self.clock() - self._start
        done = state.iter - self._start_iter
        eta = format_seconds(elapsed / done * (state.max_iters - state.iter)) if done else "?"
        return f"{format_seconds(elapsed)} eta {eta}"

    @property
    def where(self) -> tuple[int, int, int] | None:
        """(epoch index, iterations done, all iterations) of the run, once it started."""
        state = self._state
        return None if state is None else (state.epoch, state.iter, state.max_iters)

    def renderable(self) -> RenderableType:
        """What the terminal shows now (for tests: render it on a Console of any width)."""
        return Group(*self.bar.get_renderables())

    def before_run(self, ctx: TrainContext) -> None:
        # what the run restored is on the terminal already: the trainer logs it
        if not ctx.dist.is_main:
            return
        state = self._state = ctx.state
        self._start, self._start_iter = self.clock(), state.iter
        if not self.live:
            return
        for handler in logging.getLogger("detcli").handlers:
            handler.addFilter(self.filter)
        self.bar.start()
        self.task = self.bar.add_task(self._title(state), total=state.max_iters,
                                      completed=state.iter, times=self._times(state))

    def after_iter(self, ctx: TrainContext) -> None:
        if self.task is not None:
            self.bar.update(self.task, advance=1, description=self._title(ctx.state),
                            times=self._times(ctx.state))

    def on_log(self, ctx: TrainContext, record: dict[str, Any]) -> None:
        if self.task is not None and record.get("mode") == "train":
            self.bar.losses = loss_text(record)
            self.bar.refresh()

    def on_eval_progress(self, ctx: TrainContext, done: int, total: int) -> None:
        if self.task is None:
            return
        if self.eval_task is None:
            self.eval_task = self.bar.add_task("evaluating", total=total, times="")
        self.bar.update(self.eval_task, completed=done, total=total)

    def on_eval(self, ctx: TrainContext, metrics: dict[str, Any]) -> None:
        if self.eval_task is not None:
            self.bar.remove_task(self.eval_task)
            self.eval_task = None
        if self.task is not None:
            shown = ", ".join(f"{k} {metrics[k]:.4f}" for k in HEADLINE_METRICS if k in metrics)
            self.bar.console.print(f"epoch {ctx.state.epoch}: {shown}", highlight=False)

    def close(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None
        for handler in logging.getLogger("detcli").handlers:
            handler.removeFilter(self.filter)
