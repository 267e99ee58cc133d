"""``CurvesHook``: ``curves.png`` in the work dir, redrawn after each evaluation and at the end.

The engine adds it to every run unless ``log_config.curves = false``. It reads the run's
``metrics.jsonl`` (which :class:`~detcli.engine.hooks.logger.LoggerHook` has written by the
time an evaluation's hooks run, and which reads as one run across resumes) and draws every
loss term, the lr, the gradient norm when logged and the validation metric
(:func:`detcli.viz.curves.plot_run`). It draws only at evaluations and at the end, never
between iterations, and on rank 0 only; the PNG is replaced atomically.
"""

from __future__ import annotations

import logging
from pathlib import Path

from detcli.analysis.train_logs import AUTO_METRIC, RunSettings, read_run
from detcli.engine.context import LOWEST, Hook, TrainContext
from detcli.viz.curves import write_run_curves

log = logging.getLogger(__name__)


class CurvesHook(Hook):
    """Draws the run's ``metrics.jsonl`` into ``out`` at each evaluation and after the run;
    ``metric`` (the evaluation's ``save_best``, compared by ``greater``) is the one whose
    best value the legend names."""

    priority = LOWEST  # after the logger has written the evaluation's record

    def __init__(self, metrics: Path, out: Path, *, metric: str | None = None,
                 greater: bool = True) -> None:
        self.metrics = Path(metrics)
        self.out = Path(out)
        self.metric = metric or AUTO_METRIC
        self.greater = greater
        self.drawn_size = -1  # the log's size when last drawn: nothing new, nothing to draw

    def on_eval(self, ctx: TrainContext, metrics: dict) -> None:
        self.draw(ctx)

    def after_run(self, ctx: TrainContext) -> None:
        self.draw(ctx)

    def draw(self, ctx: TrainContext) -> None:
        """Redraw ``out`` when the log has grown since the last drawing (rank 0)."""
        if not ctx.dist.is_main or not self.metrics.is_file():
            return
        size = self.metrics.stat().st_size
        if size == self.drawn_size:
            return
        settings = RunSettings(metric=self.metric, greater=self.greater,
                               by_epoch=ctx.state.by_epoch)
        history = read_run(self.metrics, name=ctx.work_dir.name, settings=settings)
        write_run_curves(history, self.out)
        self.drawn_size = size
        log.debug("drew %s (%d records)", self.out, len(history.records))
