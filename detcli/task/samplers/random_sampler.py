"""Random sampling of a fixed budget of priors, as MMDetection 2.x's ``RandomSampler``.

N images, R priors, G GT slots, R' = G + R with ``add_gt_as_proposals`` (else R).

Per image: at most ``int(num * pos_fraction)`` positives, drawn uniformly when there are more;
negatives fill the budget to ``num``, capped at ``int(neg_pos_ub * max(1, sampled positives))``
when ``neg_pos_ub >= 0``. Batched over images with no Python loop: each candidate gets a random
key, and the top-k keys of each row are taken with a per-row k.
"""

from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.registry import SAMPLERS
from detcli.task.assigners.assign_result import AssignResult
from detcli.task.samplers.sampling_result import SamplingResult, prepend_gt


class RandomSamplerConfig(Schema):
    type: Literal["RandomSampler"] = "RandomSampler"
    num: int = Field(512, gt=0)  # priors sampled per image
    pos_fraction: float = Field(0.25, ge=0, le=1)
    neg_pos_ub: float = Field(-1, ge=-1)  # negatives per positive at most; < 0: no cap
    add_gt_as_proposals: bool = True


def random_subset(candidates: Tensor, count: Tensor, k_max: int,
                  generator: Optional[torch.Generator]) -> Tensor:
    """Uniformly pick ``count[n]`` of the True entries of each row of ``candidates``.

    candidates (N, R) bool, count (N,) int64 <= k_max and <= candidates per row -> (N, R) bool.
    """
    num_images, num_priors = candidates.shape
    k = min(k_max, num_priors)
    if k == 0:
        return torch.zeros_like(candidates)
    keys = torch.rand(candidates.shape, generator=generator, device=candidates.device)  # (N, R)
    keys = keys.masked_fill(~candidates, -1.0)  # non-candidates sort last
    top = torch.topk(keys, k, dim=1, sorted=True).indices  # (N, k)
    rank = torch.arange(k, device=candidates.device)[None, :]  # (1, k)
    take = rank < count[:, None]  # (N, k)
    picked = torch.zeros_like(candidates)
    return picked.scatter(1, top, take)  # (N, R)


@SAMPLERS.register(RandomSamplerConfig)
class RandomSampler:
    """Keep ``num`` priors per image, ``pos_fraction`` of them positive at most."""

    def __init__(
        self,
        *,
        num: int = 512,
        pos_fraction: float = 0.25,
        neg_pos_ub: float = -1,
        add_gt_as_proposals: bool = True,
    ) -> None:
        self.num = num
        self.pos_fraction = pos_fraction
        self.neg_pos_ub = neg_pos_ub
        self.add_gt_as_proposals = add_gt_as_proposals

    @property
    def num_expected_pos(self) -> int:
        return int(self.num * self.pos_fraction)

    @property
    def max_pos(self) -> int:
        """The most positives kept per image (:class:`~detcli.task.protocols.Sampler`)."""
        return self.num_expected_pos

    @torch.no_grad()
    def sample(
        self,
        assign: AssignResult,
        priors: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        generator: Optional[torch.Generator] = None,
    ) -> SamplingResult:
        """assign over (N, R), priors (R, 4) or (N, R, 4), gt_boxes (N, G, 4), gt_labels (N, G)
        -> SamplingResult over (N, R'). ``generator`` (on the priors' device) makes the draw
        reproducible."""
        num_images = gt_labels.shape[0]
        gt_flags = torch.zeros(num_images, priors.shape[-2], dtype=torch.bool, device=priors.device)
        if self.add_gt_as_proposals:
            assign, priors, gt_flags = prepend_gt(assign, priors, gt_boxes, gt_labels)

        pos_candidates = assign.pos_mask  # (N, R')
        neg_candidates = assign.neg_mask  # (N, R')
        num_pos = pos_candidates.sum(dim=1).clamp(max=self.num_expected_pos)  # (N,)
        num_neg = (self.num - num_pos).clamp(min=0)  # (N,)
        if self.neg_pos_ub >= 0:
            upper = torch.floor(self.neg_pos_ub * num_pos.clamp(min=1).double()).long()  # (N,)
            num_neg = torch.minimum(num_neg, upper)
        num_neg = torch.minimum(num_neg, neg_candidates.sum(dim=1))  # (N,)

        pos_mask = random_subset(pos_candidates, num_pos, self.num_expected_pos, generator)
        neg_mask = random_subset(neg_candidates, num_neg, self.num, generator)
        return SamplingResult(
            pos_mask=pos_mask,
            neg_mask=neg_mask,
            priors=priors,
            assign=assign,
            num_pos=num_pos,
            num_neg=num_neg,
            gt_flags=gt_flags,
        )
