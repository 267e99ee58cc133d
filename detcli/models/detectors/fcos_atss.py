"""FCOS and ATSS: single-stage detectors that differ from RetinaNet only in their head.

N images, H x W the padded network input, L feature levels, K classes, M ``max_per_img``.

Both are :class:`~.single_stage.SingleStageDetector` (backbone -> neck -> dense head, with the
same derivation of ``neck.in_channels`` and ``bbox_head.in_channels``); the config's
``bbox_head`` is what makes them what they are:

- FCOS (Tian et al. 2019): ``FCOSHead`` -- points (``MlvlPointGenerator``), distances to the
  box (``DistancePointBBoxCoder``), the FCOS target rule (regress ranges, optional centre
  sampling), IoU loss, centerness;
- ATSS (Zhang et al. 2020): ``ATSSHead`` -- one anchor per location (``AnchorGenerator``), box
  deltas (``DeltaXYWHBBoxCoder``), ``ATSSAssigner``, GIoU loss, centerness.

``forward(images)`` returns the head's
:class:`~detcli.structures.dense.DenseOutputs` with centerness ``score_factors``; ``loss`` adds
``loss_centerness`` to RetinaNet's two terms; ``predict`` multiplies class scores by
centerness before NMS.
"""

from __future__ import annotations

from typing import Literal

from detcli.models.detectors.single_stage import SingleStageDetector, SingleStageDetectorConfig
from detcli.registry import DETECTORS


class FCOSConfig(SingleStageDetectorConfig):
    type: Literal["FCOS"] = "FCOS"  # type: ignore[assignment]


class ATSSConfig(SingleStageDetectorConfig):
    type: Literal["ATSS"] = "ATSS"  # type: ignore[assignment]


class FCOS(SingleStageDetector):
    """FCOS: a single-stage detector whose head is an :class:`FCOSHead`."""


class ATSS(SingleStageDetector):
    """ATSS: a single-stage detector whose head is an :class:`ATSSHead`."""


DETECTORS.register(FCOSConfig)(FCOS)
DETECTORS.register(ATSSConfig)(ATSS)
