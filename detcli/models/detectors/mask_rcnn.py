"""Mask R-CNN (He et al. 2017): Faster R-CNN whose RoI head has a mask branch.

N images, M ``test_cfg.rcnn.max_per_img`` detection slots, h x w the predicted mask size
(28 x 28), H x W an image's size.

The parts are Faster R-CNN's (:mod:`detcli.models.detectors.two_stage`) with
``roi_head.mask_roi_extractor`` (RoIAlign 14 x 14 on the strides 4..32 maps) and
``roi_head.mask_head`` (:class:`~detcli.models.roi_heads.mask_head.FCNMaskHead`); its
``train_cfg.rcnn`` adds ``mask_size`` (28) and its ``test_cfg.rcnn`` ``mask_thr_binary`` (0.5).
The config derives the mask extractor's and mask head's channels from the neck as it does the
box branch's.

Training adds ``loss_mask`` to Faster R-CNN's losses. ``predict_batch`` returns the detections
with ``mask_probs`` (N, M, h, w); ``predict`` pastes them over the boxes into each image
(:mod:`~detcli.models.roi_heads.mask_paste`): with ``rescale`` the original image, else the
network-input image at the original's size times the scale factor, rounded (MMDetection's).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from detcli.config.schema import Maybe
from detcli.models.detectors.two_stage import TwoStageDetector, TwoStageDetectorConfig
from detcli.models.roi_heads.mask_paste import paste_detections
from detcli.registry import DETECTORS
from detcli.structures.batch import ImageBatch
from detcli.structures.detections import DetectionBatch, Detections
from detcli.task.two_stage_cfg import MaskRCNNTestConfig, MaskRCNNTrainConfig


class MaskRCNNConfig(TwoStageDetectorConfig):
    type: Literal["MaskRCNN"] = "MaskRCNN"  # type: ignore[assignment]
    segments: ClassVar[bool] = True
    train_cfg: Maybe[MaskRCNNTrainConfig] = Field(  # type: ignore[assignment]
        default_factory=MaskRCNNTrainConfig)
    test_cfg: MaskRCNNTestConfig = Field(  # type: ignore[assignment]
        default_factory=MaskRCNNTestConfig)


@DETECTORS.register(MaskRCNNConfig)
class MaskRCNN(TwoStageDetector):
    """Mask R-CNN with FPN: an RPNHead and a StandardRoIHead with a mask branch."""

    def predict(self, images: ImageBatch, rescale: bool = True) -> list[Detections]:
        """One :class:`Detections` per image, scores descending, ``masks`` (D, H, W) bool."""
        return pasted_detections(self.predict_batch(images, rescale=rescale), images, rescale,
                                 self.test_cfg.rcnn.mask_thr_binary)

    @staticmethod
    def paste_sizes(images: ImageBatch, rescale: bool) -> list[tuple[int, int]]:
        """(H, W) of the image each batch entry's masks are pasted into: the original with
        ``rescale``, else round(original * scale factor) (host data; no device read)."""
        if rescale:
            return [(int(h), int(w)) for h, w in images.ori_shapes]
        factors = images.scale_factors.detach().cpu().tolist()  # (N, 4) sx, sy, sx, sy
        return [(int(round(h * f[1])), int(round(w * f[0])))
                for (h, w), f in zip(images.ori_shapes, factors)]


def pasted_detections(dets: DetectionBatch, images: ImageBatch, rescale: bool,
                      threshold: float) -> list[Detections]:
    """A mask detector's batch (``mask_probs`` (N, M, h, w)) as one :class:`Detections` per
    image with ``masks`` (D, H, W) bool: the probabilities pasted over the boxes into the image
    of :meth:`MaskRCNN.paste_sizes`, ``>= threshold`` (``test_cfg.rcnn.mask_thr_binary``).
    Mask R-CNN's and Cascade Mask R-CNN's ``predict``."""
    return paste_detections(dets, MaskRCNN.paste_sizes(images, rescale), threshold=threshold)
