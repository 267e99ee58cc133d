"""Where a detector keeps its class count and its final post-processing, whatever its family.

A built detector says it itself (:class:`~detcli.models.protocols.Detector`): ``num_classes``,
``detection_test_cfg`` and ``num_classes_key`` -- a single-stage detector's come from its
``bbox_head``, a two-stage one's from its ``roi_head`` (``model.test_cfg.rcnn``). Tools, the
engine and export ask here instead of reaching into ``model.bbox_head``.

A model *config* is asked by its fields: a two-stage one has a ``roi_head``
(``roi_head.bbox_head.num_classes``, ``test_cfg.rcnn``), a single-stage one a ``bbox_head``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from detcli.models.detectors.single_stage import TrunkDetector
from detcli.models.protocols import Detector


def num_classes_of(model: Detector) -> int:
    """K, the number of object classes the detector predicts."""
    return int(model.num_classes)


def declared_num_classes(model: nn.Module) -> int | None:
    """K when ``model`` is one of det's detectors, else None (no error)."""
    return int(model.num_classes) if isinstance(model, TrunkDetector) else None


def detection_test_cfg(model: Detector) -> Any:
    """The final post-processing settings: ``score_thr``, ``nms``, ``max_per_img``, ..."""
    return model.detection_test_cfg


def num_classes_key(model_or_cfg: Any) -> str:
    """The config key that holds K, for a built model or a model config:
    ``model.bbox_head.num_classes`` or, for a two-stage detector,
    ``model.roi_head.bbox_head.num_classes``."""
    if isinstance(model_or_cfg, TrunkDetector):
        return model_or_cfg.num_classes_key
    if getattr(model_or_cfg, "roi_head", None) is not None:
        return "model.roi_head.bbox_head.num_classes"
    return "model.bbox_head.num_classes"


def config_test_cfg(model_cfg: Any) -> Any:
    """The final post-processing as the model config states it: ``model.test_cfg``, or for a
    two-stage detector the RoI head's ``model.test_cfg.rcnn`` (what an ONNX file's ``--no-nms``
    candidates still need; the RPN's NMS is inside the graph)."""
    if getattr(model_cfg, "roi_head", None) is not None:
        return model_cfg.test_cfg.rcnn
    return model_cfg.test_cfg


def config_num_classes(model_cfg: Any) -> int | None:
    """K as the model config states it (None when the head config has no ``num_classes``)."""
    roi_head = getattr(model_cfg, "roi_head", None)
    head = getattr(roi_head, "bbox_head", None) if roi_head is not None else \
        getattr(model_cfg, "bbox_head", None)
    if isinstance(head, list) and head:  # Cascade R-CNN: a box head per stage, the same K
        head = head[-1]
    value = getattr(head, "num_classes", None)
    return None if value is None else int(value)
