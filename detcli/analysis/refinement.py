"""How the RoI sampling view of ``det viz assign`` moves a Cascade R-CNN stage's sampled RoIs to
the boxes the next stage samples (:func:`~detcli.analysis.roi_sampling.sample_stages`).

S slots (the stage's sampled RoIs as :meth:`StandardRoIHead.sample
<detcli.models.roi_heads.standard_roi_head.StandardRoIHead.sample>` lays them out, padding
included), G GT boxes, K classes. Boxes are (x1, y1, x2, y2) in network-input pixels.

In training each stage's box head regresses its RoIs (positives by their GT class, the others by
their best foreground score), and the next stage samples those boxes. The view has that only
with a trained model:

- :class:`ModelRefiner` (``--checkpoint``): the checkpoint's stage-t extractor and box head on
  the model's own features, decoded by
  :func:`~detcli.models.roi_heads.cascade_roi_head.refine_rois`, the call training makes;
- :class:`TowardGT` (no checkpoint): an untrained head's regression is noise, so a stated
  stand-in replaces it: each sampled positive moves ``fraction`` (REFINE_FRACTION) of the way to
  its GT, corner by corner (``box + fraction * (gt - box)``), which is what a regressor that
  learned half of its targets would do; every other RoI stays where it is (a head learns no
  regression for negatives). Boxes are clipped to the image as training clips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from detcli.analysis.proposals import CheckpointRun
from detcli.models.roi_heads.cascade_roi_head import refine_rois
from detcli.models.roi_heads.standard_roi_head import batch_rois
from detcli.ops.boxes import clip_boxes

REFINE_FRACTION = 0.5  # the stand-in moves each positive half way to its GT


class StageRefiner(Protocol):
    """What moves stage t's sampled RoIs (S, 4) to the boxes stage t + 1 samples."""

    def refine(self, stage: int, rois: Tensor, labels: Tensor, gt_index: Tensor) -> Tensor:
        """rois (S, 4); labels (S,) the GT class of positives, -1 elsewhere; gt_index (S,)
        the matched GT of positives, -1 elsewhere -> boxes (S, 4) on the CPU."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """What the view reports (``--json``) as the refinement."""
        ...

    def legend(self, stage: int) -> str:
        """A short line saying where stage ``stage``'s boxes come from (picture, table)."""
        ...


def toward_gt(rois: Tensor, gt_boxes: Tensor, gt_index: Tensor, fraction: float,
              img_shape: tuple[int, int]) -> Tensor:
    """rois (S, 4), gt_boxes (G, 4), gt_index (S,) -> (S, 4): each RoI with gt_index >= 0
    moved ``fraction`` of the way to its GT corner by corner, the others unchanged; clipped to
    the (h, w) image."""
    target = gt_boxes.to(rois)[gt_index.clamp(min=0)] if len(gt_boxes) else rois  # (S, 4)
    moved = rois + fraction * (target - rois)  # (S, 4)
    return clip_boxes(torch.where((gt_index >= 0)[:, None], moved, rois), img_shape)


@dataclass
class TowardGT:
    """The stand-in refinement without a checkpoint (module docstring)."""

    gt_boxes: Tensor  # (G, 4)
    img_shape: tuple[int, int]  # (h, w)
    fraction: float = REFINE_FRACTION

    def refine(self, stage: int, rois: Tensor, labels: Tensor, gt_index: Tensor) -> Tensor:
        return toward_gt(rois, self.gt_boxes, gt_index, self.fraction, self.img_shape)

    def to_dict(self) -> dict[str, Any]:
        return {"source": "toward_gt", "fraction": self.fraction}

    def legend(self, stage: int) -> str:
        return f"s{stage - 1} positives moved {self.fraction:g} to GT"


@dataclass
class ModelRefiner:
    """The checkpoint's own regression (module docstring)."""

    run: CheckpointRun

    def refine(self, stage: int, rois: Tensor, labels: Tensor, gt_index: Tensor) -> Tensor:
        roi_head = self.run.model.stages.roi_head
        assert roi_head is not None  # run_checkpoint refuses a detector without one
        extractor, head = roi_head.box_stages()[stage]
        device = self.run.feats[0].device
        boxes = rois.to(device)[None]  # (1, S, 4)
        with torch.no_grad():
            cls_score, bbox_pred = head(extractor(self.run.feats, batch_rois(boxes)))
            refined = refine_rois(head, boxes, labels.to(device)[None], cls_score[None],
                                  bbox_pred[None],
                                  self.run.images.img_shapes.to(device, torch.float32))
        return refined[0].float().cpu()  # (S, 4)

    def to_dict(self) -> dict[str, Any]:
        return {"source": "checkpoint"}

    def legend(self, stage: int) -> str:
        return f"s{stage - 1} RoIs regressed by its head"
