"""Which priors a sampler picked for the losses.  N images, R' priors per image, G GT slots.

``R'`` is the number of priors the sampler saw: R, or G + R when the sampler prepends the GT
boxes as extra priors (``add_gt_as_proposals``). Every tensor here is over those R' priors,
and ``assign`` is the assignment extended to them, so indices line up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detcli.task.assigners.assign_result import AssignResult


@dataclass
class SamplingResult:
    pos_mask: Tensor  # (N, R') bool: sampled positives
    neg_mask: Tensor  # (N, R') bool: sampled negatives
    priors: Tensor  # (R', 4) or (N, R', 4): the priors the masks index
    assign: AssignResult  # over (N, R')
    num_pos: Tensor  # (N,) int64
    num_neg: Tensor  # (N,) int64
    gt_flags: Tensor  # (N, R') bool: the prior is a prepended GT box

    @property
    def sampled_mask(self) -> Tensor:
        return self.pos_mask | self.neg_mask  # (N, R')

    @property
    def avg_factor(self) -> Tensor:
        """Positives over the whole batch, at least 1: the usual loss normaliser (no sync)."""
        return self.num_pos.sum().clamp(min=1)


def prepend_gt(
    assign: AssignResult, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor
) -> tuple[AssignResult, Tensor, Tensor]:
    """GT boxes as extra priors in front: -> (assign over (N, G + R), priors (N, G + R, 4),
    gt_flags (N, G + R) bool). Padding slots become IGNORED priors, never sampled."""
    num_images, num_slots = gt_labels.shape
    if priors.dim() == 2:
        priors = priors.expand(num_images, -1, -1)  # (R, 4) -> (N, R, 4)
    extended = torch.cat([gt_boxes.to(priors), priors], dim=1)  # (N, G + R, 4)
    gt_flags = torch.zeros(num_images, extended.shape[1], dtype=torch.bool, device=priors.device)
    gt_flags[:, :num_slots] = gt_labels >= 0
    return assign.with_gt_prepended(gt_labels), extended, gt_flags
