"""What a head's training assignment did, prior by prior: :class:`Assignment`.

N images, R priors per image (all levels), G GT slots per image (padding slots have label -1).

A head's ``explain_assignment(outputs, images, targets)`` runs the assigner and the sampler its
``loss`` runs -- the same code, on the same priors -- and reports, for every prior of every
image, the GT it was matched to, that GT's class, their IoU, and its role in the loss:

- ``POSITIVE``: trained towards its GT (and counted by the normaliser);
- ``NEGATIVE``: trained as background;
- ``IGNORED``: takes no part (an ignore box, an IoU between the thresholds, outside
  ``allowed_border`` or the image's own padded area);
- ``UNSAMPLED``: assigned positive or negative, but not drawn by a sampler with a budget
  (RandomSampler), so it takes no part either.

Codes of ``gt_index`` are :mod:`detcli.task.assigners.assign_result`'s: ``>= 0`` the matched GT
slot, ``NEGATIVE = -1``, ``IGNORED = -2``. Priors are boxes in network-input pixels (a point
head's points as stride-sized cells centred on them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detcli.ops.boxes import box_iou
from detcli.task.assigners.assign_result import IGNORED

POSITIVE, NEGATIVE_ROLE, IGNORED_ROLE, UNSAMPLED = 0, 1, 2, 3
ROLE_NAMES = ("positive", "negative", "ignored", "unsampled")  # indexed by role code


@dataclass
class Assignment:
    """Every prior of every image after a head's assignment and sampling (module docstring)."""

    priors: Tensor  # (R, 4) boxes, network-input pixels
    level: Tensor  # (R,) int64 FPN level of each prior
    gt_index: Tensor  # (N, R) int64 assigner codes: >= 0 GT slot, -1 negative, -2 ignored
    labels: Tensor  # (N, R) int64 class of the matched GT, -1 off positives
    iou: Tensor  # (N, R) float32 IoU of each positive with its GT, 0 elsewhere
    max_iou: Tensor  # (N, R) float32 the assigner's IoU with the best GT (its matching cost)
    role: Tensor  # (N, R) int64 POSITIVE, NEGATIVE_ROLE, IGNORED_ROLE or UNSAMPLED

    @property
    def positive(self) -> Tensor:
        return self.role == POSITIVE  # (N, R)

    @property
    def negative(self) -> Tensor:
        return self.role == NEGATIVE_ROLE  # (N, R)

    def role_names(self, image: int) -> list[str]:
        """Image ``image``'s roles as words, prior by prior (for reports)."""
        return [ROLE_NAMES[code] for code in self.role[image].tolist()]


def build_assignment(priors: Tensor, level: Tensor, gt_boxes: Tensor, gt_index: Tensor,
                     labels: Tensor, max_iou: Tensor, pos_mask: Tensor,
                     neg_mask: Tensor) -> Assignment:
    """An :class:`Assignment` from a head's assigner codes (N, R) and the masks (N, R) its
    sampler drew: priors (R, 4), level (R,), gt_boxes (N, G, 4), labels (N, R) (-1 off
    positives), max_iou (N, R)."""
    num_images, num_priors = gt_index.shape
    # a sampler that prepends the GT as extra priors indexes G + R: keep the R real ones
    pos_mask, neg_mask = pos_mask[:, -num_priors:], neg_mask[:, -num_priors:]
    if gt_boxes.shape[1] > 0:
        overlaps = box_iou(gt_boxes, priors)  # (N, G, R)
        iou = overlaps.gather(1, gt_index.clamp(min=0)[:, None, :]).squeeze(1)  # (N, R)
    else:
        iou = priors.new_zeros(num_images, num_priors)
    positive = gt_index >= 0  # (N, R)
    role = torch.full_like(gt_index, UNSAMPLED)  # (N, R)
    role = torch.where(gt_index == IGNORED, IGNORED_ROLE, role)
    role = torch.where(neg_mask, NEGATIVE_ROLE, role)
    role = torch.where(pos_mask, POSITIVE, role)
    return Assignment(
        priors=priors, level=level, gt_index=gt_index,
        labels=torch.where(positive, labels, -1),
        iou=torch.where(positive, iou.clamp(min=0), 0.0),
        max_iou=max_iou, role=role,
    )
