"""The sampler that samples nothing away: every positive and every negative prior is used.

N images, R priors, G GT slots. The choice of dense heads trained with focal loss (RetinaNet),
which weighs easy negatives down instead of dropping them.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from torch import Tensor

from detcli.config.schema import Schema
from detcli.registry import SAMPLERS
from detcli.task.assigners.assign_result import AssignResult
from detcli.task.samplers.sampling_result import SamplingResult


class PseudoSamplerConfig(Schema):
    type: Literal["PseudoSampler"] = "PseudoSampler"


@SAMPLERS.register(PseudoSamplerConfig)
class PseudoSampler:
    """Pass the assignment through: positives and negatives exactly as assigned."""

    # declared (detcli.task.protocols.Sampler): no budget, no GT added
    num: Optional[int] = None
    pos_fraction: Optional[float] = None
    max_pos: Optional[int] = None
    add_gt_as_proposals: bool = False

    def sample(
        self,
        assign: AssignResult,
        priors: Tensor,
        gt_boxes: Optional[Tensor] = None,
        gt_labels: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> SamplingResult:
        """assign over (N, R), priors (R, 4) or (N, R, 4) -> SamplingResult over (N, R)."""
        pos_mask = assign.pos_mask  # (N, R)
        neg_mask = assign.neg_mask  # (N, R)
        return SamplingResult(
            pos_mask=pos_mask,
            neg_mask=neg_mask,
            priors=priors,
            assign=assign,
            num_pos=pos_mask.sum(dim=1),
            num_neg=neg_mask.sum(dim=1),
            gt_flags=torch.zeros_like(pos_mask),
        )
