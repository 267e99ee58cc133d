"""What an assigner decides for every prior of every image.  N images, R priors, G GT slots.

Codes of ``gt_index`` (written down once, here):

- ``>= 0``: positive, the index of the matched GT slot in [0, G);
- ``NEGATIVE = -1``: background;
- ``IGNORED = -2``: neither (IoU between the thresholds, inside an ignore region, or not a
  valid prior): contributes to no loss.

``labels`` is the matched GT's class in [0, K) for positives and ``-1`` elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

NEGATIVE = -1
IGNORED = -2


@dataclass
class AssignResult:
    gt_index: Tensor  # (N, R) int64: GT slot >= 0, NEGATIVE or IGNORED
    max_iou: Tensor  # (N, R) float32: IoU with the best valid GT, 0 when the image has none
    labels: Tensor  # (N, R) int64: class of the matched GT for positives, -1 elsewhere
    num_gts: Tensor  # (N,) int64: valid GT boxes per image

    @property
    def pos_mask(self) -> Tensor:
        return self.gt_index >= 0  # (N, R)

    @property
    def neg_mask(self) -> Tensor:
        return self.gt_index == NEGATIVE  # (N, R)

    @property
    def ignored_mask(self) -> Tensor:
        return self.gt_index == IGNORED  # (N, R)

    @property
    def num_pos(self) -> Tensor:
        return self.pos_mask.sum(dim=1)  # (N,)

    def matched_gt(self, gt_boxes: Tensor) -> Tensor:
        """The matched GT box of every prior, (N, G, 4) -> (N, R, 4); zeros where not positive."""
        index = self.gt_index.clamp(min=0)  # (N, R)
        index = index[..., None].expand(-1, -1, gt_boxes.shape[-1])  # (N, R) -> (N, R, 4)
        boxes = torch.gather(gt_boxes, 1, index)  # (N, R, 4)
        return boxes * self.pos_mask[..., None].to(boxes)

    def with_gt_prepended(self, gt_labels: Tensor) -> AssignResult:
        """The result for priors ``cat([gt_boxes, priors], dim=1)``: (N, G + R).

        Each valid GT slot becomes a positive prior matched to itself (IoU 1); padding slots
        (label -1) become IGNORED priors. MMDetection's ``AssignResult.add_gt_``.
        """
        num_images, num_slots = gt_labels.shape
        valid = gt_labels >= 0  # (N, G)
        slots = torch.arange(num_slots, device=gt_labels.device).expand(num_images, -1)  # (N, G)
        self_index = torch.where(valid, slots, torch.full_like(slots, IGNORED))  # (N, G)
        return AssignResult(
            gt_index=torch.cat([self_index, self.gt_index], dim=1),
            max_iou=torch.cat([valid.to(self.max_iou), self.max_iou], dim=1),
            labels=torch.cat([torch.where(valid, gt_labels, -1), self.labels], dim=1),
            num_gts=self.num_gts,
        )
