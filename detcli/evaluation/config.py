"""``[evaluation]``: when the in-training evaluation runs, which metrics it computes and how.

``metric`` names one metric or a list of them; every one listed is computed and the first is
the *primary* one (its headline key is what ``save_best = "auto"`` picks):

- ``"bbox"``: COCO box AP/AR through ``COCOeval`` (:mod:`detcli.evaluation.coco`), primary key
  ``bbox_mAP``; ``backend`` picks the COCOeval implementation (pycocotools, or the optional
  faster-coco-eval drop-in: ``pip install 'detcli[fast-eval]'``);
- ``"segm"``: COCO mask AP/AR (the same ``COCOeval`` with iouType "segm" on the detections' RLE
  masks, :mod:`detcli.evaluation.segm`), primary key ``segm_mAP``; needs a detector with masks
  (MaskRCNN) and GT masks (a COCO file's ``segmentation``, YOLO polygon labels);
- ``"voc"``: Pascal VOC mAP (:mod:`detcli.evaluation.voc`), primary key ``voc_mAP``, set up by
  ``[evaluation.voc]`` with MMDetection 3.x ``VOCMetric``'s names and defaults.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator

from detcli.config.schema import Maybe, Schema

MetricName = Literal["bbox", "segm", "voc"]
Backend = Literal["pycocotools", "faster-coco-eval"]

PRIMARY_KEYS: dict[str, str] = {"bbox": "bbox_mAP", "segm": "segm_mAP", "voc": "voc_mAP"}


class VocMetricConfig(Schema):
    """Pascal VOC mAP settings (MMDetection 3.x ``VOCMetric``).

    ``eval_mode``: ``"11points"`` (VOC2007: mean of the best precision at recall >= 0, 0.1, ...,
    1) or ``"area"`` (VOC2010 and later: area under the monotone precision envelope).
    ``iou_thrs``: one threshold or several (``voc_mAP`` is then the mean over them).
    ``use_legacy_coordinate``: widths and heights are ``x2 - x1 + 1`` (the VOC devkit's pixel
    convention, which ``VOCMetric`` always uses); ``false`` for ``x2 - x1``.
    """

    eval_mode: Literal["11points", "area"] = "11points"
    iou_thrs: Union[float, list[float]] = 0.5
    use_legacy_coordinate: bool = True

    @field_validator("iou_thrs")
    @classmethod
    def _thresholds(cls, value: float | list[float]) -> float | list[float]:
        thresholds = [value] if isinstance(value, float) else value
        if not thresholds:
            raise ValueError("needs at least one IoU threshold, e.g. 0.5 or [0.5, 0.75]")
        bad = [t for t in thresholds if not 0 < t <= 1]
        if bad:
            raise ValueError(f"IoU thresholds must be in (0, 1]; got {bad}")
        if len(set(thresholds)) != len(thresholds):
            raise ValueError(f"IoU thresholds {thresholds} repeat a value")
        return value

    @property
    def thresholds(self) -> tuple[float, ...]:
        """``iou_thrs`` as a tuple, in the order given."""
        return (self.iou_thrs,) if isinstance(self.iou_thrs, float) else tuple(self.iou_thrs)


class EvaluationConfig(Schema):
    interval: int = Field(1, ge=1)  # epochs (iterations with IterBasedRunner)
    metric: Union[MetricName, list[MetricName]] = "bbox"  # a list: all computed, the first primary
    save_best: Maybe[str] = "auto"  # the metric that picks the `best` checkpoint; auto: primary key
    rule: Maybe[Literal["greater", "less"]] = None  # how save_best compares; None: greater
    backend: Backend = "pycocotools"  # the COCOeval that scores metrics "bbox" and "segm"
    voc: VocMetricConfig = Field(default_factory=VocMetricConfig)  # metric "voc"
    plots: bool = True  # at the end of training, the last evaluation's report in <work_dir>/plots

    @field_validator("metric")
    @classmethod
    def _metrics_listed_once(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names:
            raise ValueError(f"is empty; name at least one of {list(PRIMARY_KEYS)}")
        if len(set(names)) != len(names):
            raise ValueError("names a metric twice")
        return value

    @property
    def metrics(self) -> list[str]:
        """``metric`` as a list, the primary one first."""
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def primary_key(self) -> str:
        """The headline key of the primary metric (``bbox_mAP``, ``voc_mAP``)."""
        return PRIMARY_KEYS[self.metrics[0]]
