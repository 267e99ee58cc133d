"""The evaluation report behind ``det test --plots DIR`` and the end-of-training plots.

One function, :func:`evaluation_report`, builds it from a :class:`CocoEvaluator` and the COCO
results of its dataset; ``det test`` (:func:`~detcli.engine.checkpoint_eval.evaluate_checkpoint`)
and the in-training evaluation's last run (:class:`~detcli.engine.hooks.eval_hook.EvalHook`)
both call it, the CLI renders it, :mod:`detcli.viz.report_plots` draws it.

K classes. The report holds:

- ``metrics``: the COCO metrics (:mod:`detcli.evaluation.coco`), ``per_class``: K
  :class:`~detcli.evaluation.coco.ClassAP` rows (AP, AP50, AP75, AP_s, AP_m, AP_l);
- ``pr_curves``: :class:`~detcli.evaluation.pr_curves.PRCurves` at IoU 0.5 and 0.75, from the
  same COCOeval's accumulated precision;
- ``confusion``: the confusion matrix at (``conf_iou``, ``conf_score``)
  (:mod:`detcli.evaluation.confusion`);
- ``errors``: the TIDE-style error breakdown, each error type's dAP50
  (:mod:`detcli.evaluation.errors`, its own thresholds: t_f 0.5, t_b 0.1);
- ``worst_images``: the images with the most errors in that matrix's matching
  (:mod:`detcli.evaluation.worst_images`), at most ``top_images``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from detcli.errors import ConfigError, writing
from detcli.evaluation.coco import ClassAP, CocoEvaluator
from detcli.evaluation.confusion import ConfusionMatrix, confusion_matrix
from detcli.evaluation.errors import ErrorBreakdown, error_breakdown
from detcli.evaluation.pr_curves import PR_IOUS, PRCurves, pr_curves
from detcli.evaluation.worst_images import ImageErrors, image_errors, worst_images

REPORT_JSON = "report.json"


@dataclass(frozen=True)
class ReportOptions:
    """The thresholds of the confusion matrix, the error counts per image and the top list."""

    conf_iou: float = 0.5  # IoU a detection needs to match a GT box
    conf_score: float = 0.3  # detections scoring below are not counted
    top_images: int = 20  # how many of the images with the most errors are listed

    def __post_init__(self) -> None:
        if not 0.0 < self.conf_iou <= 1.0:
            raise ConfigError(f"the confusion IoU threshold (--conf-iou) must be in (0, 1], "
                              f"got {self.conf_iou}")
        if not 0.0 <= self.conf_score <= 1.0:
            raise ConfigError(f"the confusion score threshold (--conf-score) must be in [0, 1], "
                              f"got {self.conf_score}")
        if self.top_images < 0:
            raise ConfigError(f"the number of worst images to list must be >= 0, "
                              f"got {self.top_images}")


@dataclass
class EvaluationReport:
    """Everything ``det test --plots`` shows (module docstring)."""

    options: ReportOptions
    class_names: list[str]  # K
    metrics: dict[str, Any]  # CocoEvaluator metrics, per_class included
    per_class: list[ClassAP]  # K
    pr_curves: list[PRCurves]  # one per IoU of PR_IOUS
    confusion: ConfusionMatrix  # at (options.conf_iou, options.conf_score)
    errors: ErrorBreakdown  # TIDE-style, at IoU 0.5
    worst_images: list[ImageErrors]  # most errors first

    def curves_at(self, iou: float) -> PRCurves:
        """The PR curves at IoU ``iou`` (0.5 or 0.75)."""
        for curves in self.pr_curves:
            if abs(curves.iou - iou) < 1e-9:
                return curves
        raise ConfigError(f"the report has PR curves at IoU {[c.iou for c in self.pr_curves]}, "
                          f"not {iou}")

    def to_json(self) -> dict[str, Any]:
        return {
            "options": {"conf_iou": self.options.conf_iou, "conf_score": self.options.conf_score,
                        "top_images": self.options.top_images},
            "classes": list(self.class_names),
            "metrics": {k: v for k, v in self.metrics.items() if k != "per_class"},
            "per_class": [row.to_json() for row in self.per_class],
            "pr_curves": [curves.to_json() for curves in self.pr_curves],
            "confusion": self.confusion.to_json(),
            "errors": self.errors.to_json(),
            "worst_images": [image.to_json() for image in self.worst_images],
        }


def evaluation_report(evaluator: CocoEvaluator, results: Sequence[dict[str, Any]],
                      options: ReportOptions = ReportOptions()) -> EvaluationReport:
    """The report of COCO ``results`` (``evaluator.results(detections)``) on the evaluator's
    dataset: one COCO evaluation for the metrics, rows and curves, one confusion matrix at
    (``options.conf_iou``, ``options.conf_score``) for the matrix and the errors per image, and
    the error breakdown (seven COCOeval runs at IoU 0.5)."""
    scores = evaluator.score_results(list(results))
    names = evaluator.class_names
    confusion = confusion_matrix(evaluator.gt, results, iou_thr=options.conf_iou,
                                 score_thr=options.conf_score)
    return EvaluationReport(
        options=options, class_names=list(names), metrics=scores.metrics,
        per_class=scores.per_class,
        pr_curves=[pr_curves(scores.accumulated, names, iou) for iou in PR_IOUS],
        confusion=confusion, errors=error_breakdown(evaluator.gt, results),
        worst_images=worst_images(image_errors(evaluator.gt, confusion), options.top_images))


def write_report_json(report: EvaluationReport, path: str | Path) -> Path:
    """Write :meth:`EvaluationReport.to_json` at ``path`` (folders made)."""
    path = Path(path)
    with writing(path, "the evaluation report"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report.to_json(), indent=1), encoding="utf-8")
    return path
