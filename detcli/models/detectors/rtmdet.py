"""RTMDet (Lyu et al. 2022): a single-stage detector of CSPNeXt, CSPNeXtPAFPN and
RTMDetSepBNHead, as MMDetection 3.3's ``RTMDet``.

N images, L levels (strides 8, 16, 32), K classes, M ``max_per_img``.

It is a :class:`~.single_stage.SingleStageDetector` (backbone -> neck -> dense head); what it
adds are its defaults: ``train_cfg`` with the dynamic soft-label assigner (``topk = 13``) and
``test_cfg`` of the ``rtmdet_*_8xb32-300e_coco`` configs (``nms_pre`` 30000, ``score_thr``
0.001, NMS IoU 0.65, ``max_per_img`` 300).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from detcli.config.schema import Maybe
from detcli.models.dense_heads.rtmdet_head import rtmdet_train_cfg
from detcli.models.detectors.single_stage import SingleStageDetector, SingleStageDetectorConfig
from detcli.registry import DETECTORS
from detcli.task.postprocess import DenseTestConfig, NMSConfig
from detcli.task.train_cfg import DenseTrainConfig


def rtmdet_test_cfg() -> DenseTestConfig:
    """RTMDet's ``test_cfg`` (MMDetection 3.3's rtmdet configs)."""
    return DenseTestConfig(nms_pre=30000, min_bbox_size=0, score_thr=0.001,
                           nms=NMSConfig(iou_threshold=0.65), max_per_img=300)


class RTMDetConfig(SingleStageDetectorConfig):
    type: Literal["RTMDet"] = "RTMDet"  # type: ignore[assignment]
    train_cfg: Maybe[DenseTrainConfig] = Field(default_factory=rtmdet_train_cfg)
    test_cfg: Maybe[DenseTestConfig] = Field(default_factory=rtmdet_test_cfg)


@DETECTORS.register(RTMDetConfig)
class RTMDet(SingleStageDetector):
    """RTMDet: a single-stage detector whose head is an :class:`RTMDetSepBNHead`."""
