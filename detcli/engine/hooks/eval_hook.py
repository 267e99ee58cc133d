"""``EvalHook``: evaluation during training, and the ``best_<metric>.pth`` checkpoint.

Evaluates every ``evaluation.interval`` epochs (iterations with IterBasedRunner), and always
at the end of the run, after that point's checkpoint is written, with :func:`detcli.engine.evaluation.evaluate` on ``data.val`` built in
test mode (every image kept), scored by the evaluator of ``evaluation.metric``
(:func:`~detcli.evaluation.evaluator.build_evaluator`, built before the first epoch so a missing
optional package stops the run before it trains). It evaluates the EMA weights when an EMAHook keeps them, else
the model. In a distributed run every rank evaluates its share of the images and all get the
same metrics (the tester gathers the detections). Evaluation leaves every random-number
generator as it found it, so a run with evaluation draws the same augmentations as one
without, and a resumed run the same as an uninterrupted one.

At the end of the run (``after_run``), rank 0 writes the evaluation report of the last
evaluation's detections into ``<work_dir>/plots/`` (:mod:`detcli.evaluation.report`: PR curves,
confusion matrix, error breakdown, ``report.json``; what ``det test --plots`` writes, at its
default thresholds) unless ``evaluation.plots = false``.

``save_best`` names the metric that picks ``best_<metric>.pth`` (``auto``: the primary metric's
headline key, ``bbox_mAP`` or ``voc_mAP``),
compared by ``rule`` (greater unless said otherwise, or the name contains "loss").
"""

from __future__ import annotations

import logging
import math
from typing import Any

from torch.utils.data import DataLoader

from detcli.engine import evaluation
from detcli.engine.context import NORMAL, Hook, TrainContext
from detcli.engine.seed import preserved_rng
from detcli.engine.state import TrainState
from detcli.engine.tester import build_test_loader
from detcli.errors import ConfigError
from detcli.evaluation.coco import CocoEvaluator
from detcli.evaluation.config import EvaluationConfig
from detcli.evaluation.evaluator import Evaluator, build_evaluator
from detcli.evaluation.report import evaluation_report
from detcli.structures.detections import Detections
from detcli.viz.report_plots import write_report_plots

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"  # in the work dir: the last evaluation's report


class EvalHook(Hook):
    """Evaluates at intervals and at the end; keeps ``ctx.state.metrics`` and ``best``."""

    priority = NORMAL - 5  # after the checkpoint (42), before early stopping (48)

    def __init__(self, *, interval: int = 1, save_best: str | None = "auto",
                 rule: str | None = None, batch_size: int = 1,
                 scoring: EvaluationConfig | None = None) -> None:
        self.interval = interval
        self.scoring = scoring or EvaluationConfig()  # metric(s), backend, VOC settings
        self.save_best = self.scoring.primary_key if save_best == "auto" else save_best
        self.greater = (rule or ("less" if self.save_best and "loss" in self.save_best
                                 else "greater")) == "greater"
        self.batch_size = batch_size
        self._loader: DataLoader | None = None
        self._evaluator: Evaluator | None = None
        self._last_detections: list[Detections] | None = None  # for the end-of-run plots

    @classmethod
    def from_config(cls, cfg: EvaluationConfig) -> EvalHook:
        return cls(interval=cfg.interval, save_best=cfg.save_best, rule=cfg.rule, scoring=cfg)

    def before_run(self, ctx: TrainContext) -> None:
        self.evaluator(ctx)  # now, not after the first epoch: a missing package is a ConfigError

    def evaluator(self, ctx: TrainContext) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = build_evaluator(self.scoring, ctx.val_dataset)
        return self._evaluator

    def loader(self, ctx: TrainContext) -> DataLoader:
        if self._loader is None:
            self._loader = build_test_loader(
                ctx.val_dataset, samples_per_gpu=self.batch_size,
                workers_per_gpu=ctx.cfg.data.workers_per_gpu, distributed=ctx.dist.enabled)
        return self._loader

    def due(self, state: TrainState) -> bool:
        """Whether an evaluation belongs at the end of the epoch (iteration) ``state`` is at."""
        if state.by_epoch and state.iter != state.epoch * state.iters_per_epoch:
            return False  # inside an epoch
        done = state.epoch if state.by_epoch else state.iter
        return done > 0 and (done % self.interval == 0 or state.finished)

    def evaluates_at(self, state: TrainState) -> bool:
        return self.due(state)

    def after_epoch(self, ctx: TrainContext) -> None:
        if ctx.state.by_epoch and self.due(ctx.state):
            self.evaluate(ctx)

    def after_iter(self, ctx: TrainContext) -> None:
        if not ctx.state.by_epoch and self.due(ctx.state):
            self.evaluate(ctx)

    def after_run(self, ctx: TrainContext) -> None:
        """A run that stopped early, between evaluations, still ends with one; then the plots
        of the last evaluation."""
        if ctx.state.metrics_iter != ctx.state.iter:
            self.evaluate(ctx)
        if self.scoring.plots and self._last_detections is not None and ctx.dist.is_main:
            self.write_plots(ctx, self._last_detections)

    def write_plots(self, ctx: TrainContext, detections: list[Detections]) -> None:
        """The evaluation report of ``detections`` (the val set's) into ``<work_dir>/plots``."""
        coco = CocoEvaluator(ctx.val_dataset, backend=self.scoring.backend)
        report = evaluation_report(coco, coco.results(detections))
        written = write_report_plots(report, ctx.work_dir / PLOTS_DIR)
        log.info("wrote the last evaluation's report (%s %d) to %s: %s", ctx.state.rule.unit,
                 ctx.state.rule.done(ctx.state), ctx.work_dir / PLOTS_DIR,
                 ", ".join(p.name for p in written))

    def evaluate(self, ctx: TrainContext) -> dict[str, Any]:
        model = ctx.ema.module if ctx.ema is not None else ctx.model
        with preserved_rng():
            evaluated = evaluation.evaluate(
                model, self.loader(ctx), self.evaluator(ctx), ctx.device,
                progress=lambda done, total: ctx.hooks.call("on_eval_progress", ctx, done, total))
        metrics = evaluated.metrics
        if self.scoring.plots:
            self._last_detections = evaluated.detections
        ctx.model.train()
        state = ctx.state
        state.metrics, state.metrics_iter = metrics, state.iter
        record = {"mode": "val", "epoch": state.epoch, "iter": state.iter,
                  **{k: v for k, v in metrics.items() if k != "per_class"},
                  "per_class": metrics.get("per_class")}
        ctx.emit_log(record)
        if self.save_best:
            self._maybe_save_best(ctx, metrics)
        ctx.hooks.call("on_eval", ctx, metrics)
        return metrics

    def _maybe_save_best(self, ctx: TrainContext, metrics: dict[str, Any]) -> None:
        name = self.save_best
        if name not in metrics:
            numeric = ", ".join(k for k, v in metrics.items() if isinstance(v, (int, float)))
            raise ConfigError(f"evaluation.save_best = {name!r} is not an evaluation metric; "
                              f"the evaluation gives: {numeric}")
        value = float(metrics[name])
        best = ctx.state.best
        if not math.isfinite(value) or (best is not None and not (
                value > best["value"] if self.greater else value < best["value"])):
            return
        path = ctx.work_dir / f"best_{name}.pth"
        ctx.state.best = {"metric": name, "value": value, "epoch": ctx.state.epoch,
                              "iter": ctx.state.iter, "path": str(path)}
        ctx.save_checkpoint(path)  # every rank: it gathers their random generators
        log.info("new best %s = %.4f at epoch %d: saved %s", name, value, ctx.state.epoch,
                 path.name)
