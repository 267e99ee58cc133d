"""The one progress bar of ``det test``, ``det predict`` and the other finite jobs.

A bar on stderr: what is being done, the bar, items done of all, elapsed time and the time left
(``testing ━━━━━━━━━━━━━━━━━━━━━━━━━ 12/50 0:00:04 eta 0:00:13``). It is off under ``--json``
and when stderr is not a terminal (a pipe, a log file, CI), and it leaves the terminal when the
job ends. :meth:`JobProgress.step` is the ``progress(done, total)`` callback the library's long
jobs take (:func:`detcli.engine.checkpoint_eval.evaluate_checkpoint`, the drawing of pictures).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from detcli.cli.common import err_console


def progress_columns() -> tuple[Any, ...]:
    """Description, bar, done/total, elapsed, ``eta`` and time left."""
    return (TextColumn("{task.description}"), BarColumn(bar_width=None), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())


class JobProgress:
    """``with JobProgress("predicting", total=n, quiet=as_json) as job: ... job.advance()``."""

    def __init__(self, description: str, total: Optional[int] = None, *, quiet: bool = False,
                 console: Console | None = None,
                 get_time: Callable[[], float] | None = None) -> None:
        console = console or err_console
        self.bar = Progress(*progress_columns(), console=console, transient=True,
                            disable=quiet or not console.is_terminal, get_time=get_time)
        self.task: TaskID = self.bar.add_task(description, total=total)

    def __enter__(self) -> JobProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def advance(self, amount: int = 1) -> None:
        self.bar.advance(self.task, amount)

    def step(self, done: int, total: Optional[int] = None) -> None:
        """``done`` of ``total`` finished (``total`` None: unchanged)."""
        if total is None:
            self.bar.update(self.task, completed=done)
        else:
            self.bar.update(self.task, completed=done, total=total)
