"""``FixedMaskTestDetector``: a detector defined in a test file that predicts instance masks,
for the commands that write and draw them (``det test``, ``det predict``) before a trained Mask
R-CNN is at hand.

Every image gets the same two detections, in original-image pixels: ``BOX`` of class 0 at
score 0.9 and ``LOW_BOX`` of class 1 at score 0.2 (under ``det predict``'s default
``--score-thr`` 0.3), each with a 28 x 28 mask probability of ``PROB`` = 0.75 everywhere.
Pasted over its box (:func:`~detcli.models.roi_heads.mask_paste.paste_detections`) at the
default ``mask_thr_binary`` 0.5 such a mask is exactly the box's pixels, x1 <= x < x2 and
y1 <= y < y2 for integer corners: the first pixel outside an edge has its centre half a pixel
out and samples (0.5 - 14 / w) * 0.75 (w the box's side, zero padding beyond), under 0.5; the
first inside samples at least (0.5 + 14 / w) * 0.75 >= 0.5 for w <= 56. At a threshold above
0.75 every mask is empty.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.models.roi_heads.mask_paste import paste_detections
from detcli.registry import DETECTORS
from detcli.structures.batch import ImageBatch
from detcli.structures.detections import DetectionBatch, Detections
from detcli.task.two_stage_cfg import RCNNMaskTestConfig

BOX = (8.0, 8.0, 40.0, 40.0)  # class 0, score 0.9
LOW_BOX = (50.0, 50.0, 60.0, 60.0)  # class 1, score 0.2
MASK_SIZE = 28
PROB = 0.75


class FixedMaskTestDetectorConfig(Schema):
    type: Literal["FixedMaskTestDetector"] = "FixedMaskTestDetector"
    num_classes: int = Field(3, ge=2)
    test_cfg: RCNNMaskTestConfig = Field(default_factory=RCNNMaskTestConfig)


@DETECTORS.register(FixedMaskTestDetectorConfig)
class FixedMaskTestDetector(nn.Module):
    """The module docstring's two detections on every image (the Detector protocol)."""

    num_classes_key = "model.num_classes"

    def __init__(self, *, num_classes: int = 3, test_cfg: RCNNMaskTestConfig | None = None
                 ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.test_cfg = test_cfg if test_cfg is not None else RCNNMaskTestConfig()
        self.weight = nn.Parameter(torch.ones(1))  # something for a checkpoint to hold

    @property
    def detection_test_cfg(self) -> RCNNMaskTestConfig:
        return self.test_cfg

    def loss(self, images: ImageBatch, targets) -> dict[str, Tensor]:
        return {"loss_fixed": self.weight.sum() * 0}

    def candidates(self, images: ImageBatch):
        raise AssertionError("FixedMaskTestDetector is not run with TTA")

    def predict_batch(self, images: ImageBatch, rescale: bool = True) -> DetectionBatch:
        n = images.tensor.shape[0]
        boxes = torch.tensor([BOX, LOW_BOX]).expand(n, 2, 4).clone()  # (N, 2, 4)
        if not rescale:  # network-input pixels
            boxes = boxes * images.scale_factors[:, None, :].cpu()
        return DetectionBatch(
            boxes=boxes, scores=torch.tensor([[0.9, 0.2]]).expand(n, 2).clone(),
            labels=torch.tensor([[0, 1]]).expand(n, 2).clone(),
            num_dets=torch.full((n,), 2, dtype=torch.long),
            mask_probs=torch.full((n, 2, MASK_SIZE, MASK_SIZE), PROB))

    def predict(self, images: ImageBatch, rescale: bool = True) -> list[Detections]:
        sizes = [(int(h), int(w)) for h, w in images.ori_shapes]
        return paste_detections(self.predict_batch(images, rescale), sizes,
                                threshold=self.test_cfg.mask_thr_binary)
