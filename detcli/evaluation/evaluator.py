"""What the engine needs from a metric (:class:`Evaluator`), and the one place that builds it.

``build_evaluator(cfg.evaluation, dataset)`` is how ``det test``
(:func:`~detcli.engine.checkpoint_eval.evaluate_checkpoint`), the in-training evaluation
(:class:`~detcli.engine.hooks.eval_hook.EvalHook`) and
:func:`~detcli.engine.evaluation.evaluate` get their evaluator. Building it is where a missing
optional package (``backend = "faster-coco-eval"``) is reported, before any image is run.

One metric gives its own evaluator; several (``metric = ["bbox", "voc"]``) give a
:class:`CombinedEvaluator`: every metric's keys side by side (their prefixes keep them apart)
and one ``per_class`` list whose entries hold every metric's per-class keys.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

from detcli.evaluation.coco import CocoEvaluator
from detcli.evaluation.config import EvaluationConfig
from detcli.evaluation.voc import VocEvaluator
from detcli.errors import DetError
from detcli.structures.detections import Detections


class Evaluator(Protocol):
    """Scores one dataset's detections: one :class:`Detections` per dataset image, in order."""

    @property
    def class_names(self) -> list[str]:
        """K class names in label order."""
        ...

    def results(self, detections: Sequence[Detections]) -> list[dict[str, Any]]:
        """The detections in COCO results format, with the dataset's image and category ids."""
        ...

    def evaluate(self, detections: Sequence[Detections]) -> dict[str, Any]:
        """Metric name -> value (JSON-able), and ``per_class``: one dict per label with
        ``"class"`` and that metric's per-class keys."""
        ...


class CombinedEvaluator:
    """Several evaluators as one: the first gives ``results``; ``evaluate`` merges them."""

    def __init__(self, evaluators: Sequence[Evaluator]) -> None:
        if not evaluators:
            raise DetError("CombinedEvaluator needs at least one evaluator")
        self.evaluators = list(evaluators)

    @property
    def class_names(self) -> list[str]:
        return self.evaluators[0].class_names

    def results(self, detections: Sequence[Detections]) -> list[dict[str, Any]]:
        return self.evaluators[0].results(detections)

    def evaluate(self, detections: Sequence[Detections]) -> dict[str, Any]:
        """Every evaluator's metrics in one dict; per-class entries merged label by label."""
        merged: dict[str, Any] = {}
        per_class: list[dict[str, Any]] = []
        for evaluator in self.evaluators:
            metrics = evaluator.evaluate(detections)
            rows = metrics.pop("per_class", [])
            clash = sorted(set(merged) & set(metrics))
            if clash:
                raise DetError(f"two metrics both report {clash}")
            merged.update(metrics)
            per_class = [{**old, **new} for old, new in zip(per_class, rows)] if per_class else rows
        merged["per_class"] = per_class
        return merged


BUILDERS: dict[str, Callable[[EvaluationConfig, Any], Evaluator]] = {
    "bbox": lambda cfg, dataset: CocoEvaluator(dataset, backend=cfg.backend),
    "segm": lambda cfg, dataset: CocoEvaluator(dataset, backend=cfg.backend, iou_type="segm"),
    "voc": lambda cfg, dataset: VocEvaluator.from_config(cfg.voc, dataset),
}


def build_evaluator(cfg: EvaluationConfig, dataset: Any) -> Evaluator:
    """The evaluator of ``cfg.metric`` on ``dataset`` (a list of metrics: combined, in order)."""
    built = [BUILDERS[name](cfg, dataset) for name in cfg.metrics]
    return built[0] if len(built) == 1 else CombinedEvaluator(built)
