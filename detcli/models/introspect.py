"""Where a detector keeps its class count and its final post-processing, whatever its family.

A single-stage detector's last head is ``bbox_head`` (its ``num_classes``, its ``test_cfg``);
a two-stage detector's is ``roi_head`` (``roi_head.bbox_head.num_classes`` in the config, the
RoI head's ``test_cfg`` = ``model.test_cfg.rcnn``). Tools, the engine and export ask here
instead of reaching into ``model.bbox_head``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from detcli.errors import ConfigError


def final_head(model: nn.Module) -> nn.Module:
    """The head whose outputs are the detections: ``bbox_head`` or ``roi_head``."""
    for name in ("roi_head", "bbox_head"):
        head = getattr(model, name, None)
        if head is not None:
            return head
    raise ConfigError(f"{type(model).__name__} has neither a bbox_head nor a roi_head")


def num_classes_of(model: nn.Module) -> int:
    """K, the number of object classes the detector predicts."""
    return int(final_head(model).num_classes)


def declared_num_classes(model: nn.Module) -> int | None:
    """K when the model has a final head that states it, else None (no error)."""
    head = getattr(model, "roi_head", None)
    head = getattr(model, "bbox_head", None) if head is None else head
    value = getattr(head, "num_classes", None)
    return None if value is None else int(value)


def detection_test_cfg(model: nn.Module) -> Any:
    """The final post-processing settings: ``score_thr``, ``nms``, ``max_per_img``, ..."""
    return final_head(model).test_cfg


def num_classes_key(model_or_cfg: Any) -> str:
    """The config key that holds K, for a model config or a built model:
    ``model.bbox_head.num_classes`` or, for a two-stage detector,
    ``model.roi_head.bbox_head.num_classes``."""
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
    value = getattr(head, "num_classes", None)
    return None if value is None else int(value)
