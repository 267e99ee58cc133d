"""PseudoSampler and RandomSampler: masks, budgets, GT as proposals, reproducibility."""

import pytest
import torch
from pydantic import ValidationError

from detcli.registry import SAMPLERS
from detcli.task.assigners import IGNORED, NEGATIVE, AssignResult
from detcli.task.samplers import PseudoSampler, RandomSampler, RandomSamplerConfig


def make_assign(gt_index: list[list[int]]) -> AssignResult:
    index = torch.tensor(gt_index)
    return AssignResult(
        gt_index=index,
        max_iou=torch.zeros(index.shape),
        labels=torch.where(index >= 0, 5, -1),
        num_gts=torch.ones(index.shape[0], dtype=torch.long),
    )


# image 0: 10 positives then 10 negatives; image 1: 2 positives, 17 negatives, 1 ignored;
# image 2: no positive, 20 negatives
ASSIGN = make_assign([
    [0] * 10 + [NEGATIVE] * 10,
    [0, 0] + [NEGATIVE] * 17 + [IGNORED],
    [NEGATIVE] * 20,
])
PRIORS = torch.rand(20, 4, generator=torch.Generator().manual_seed(1))
GT_BOXES = torch.zeros(3, 1, 4)
GT_LABELS = torch.full((3, 1), 5)


def test_pseudo_sampler_takes_everything():
    result = PseudoSampler().sample(ASSIGN, PRIORS)
    assert torch.equal(result.pos_mask, ASSIGN.gt_index >= 0)
    assert torch.equal(result.neg_mask, ASSIGN.gt_index == NEGATIVE)
    assert result.num_pos.tolist() == [10, 2, 0]
    assert result.num_neg.tolist() == [10, 17, 20]
    assert result.priors is PRIORS and result.assign is ASSIGN
    assert not result.gt_flags.any()
    assert result.avg_factor.item() == 12


def test_random_sampler_budget():
    sampler = RandomSampler(num=8, pos_fraction=0.25, add_gt_as_proposals=False)
    result = sampler.sample(ASSIGN, PRIORS, GT_BOXES, GT_LABELS, torch.Generator().manual_seed(0))
    # at most int(8 * 0.25) = 2 positives; negatives fill to 8
    assert result.num_pos.tolist() == [2, 2, 0]
    assert result.num_neg.tolist() == [6, 6, 8]
    assert result.pos_mask.sum(1).tolist() == [2, 2, 0]
    assert result.neg_mask.sum(1).tolist() == [6, 6, 8]
    assert not (result.pos_mask & ~ASSIGN.pos_mask).any()  # positives come from positives
    assert not (result.neg_mask & ~ASSIGN.neg_mask).any()  # negatives from negatives only
    assert not result.neg_mask[1, 19]  # the ignored prior is never sampled


def test_random_sampler_neg_pos_ub_and_short_supply():
    sampler = RandomSampler(num=8, pos_fraction=0.5, neg_pos_ub=1, add_gt_as_proposals=False)
    result = sampler.sample(ASSIGN, PRIORS, GT_BOXES, GT_LABELS)
    # positives: min(available, 4) = 4, 2, 0; negatives capped at 1 * max(1, positives)
    assert result.num_pos.tolist() == [4, 2, 0]
    assert result.num_neg.tolist() == [4, 2, 1]
    assert result.neg_mask.sum(1).tolist() == [4, 2, 1]
    big = RandomSampler(num=100, pos_fraction=0.5, add_gt_as_proposals=False)
    result = big.sample(ASSIGN, PRIORS, GT_BOXES, GT_LABELS)
    assert result.num_pos.tolist() == [10, 2, 0]  # fewer candidates than the budget
    assert result.num_neg.tolist() == [10, 17, 20]


def test_gt_as_proposals_prepends_gt():
    gt_boxes = torch.tensor([[[1., 1., 5., 5.], [0., 0., 0., 0.]]])  # slot 1 is padding
    gt_labels = torch.tensor([[2, -1]])
    assign = make_assign([[NEGATIVE, NEGATIVE, NEGATIVE]])
    priors = torch.tensor([[0., 0., 9., 9.], [2., 2., 4., 4.], [6., 6., 9., 9.]])
    result = RandomSampler(num=4, pos_fraction=0.5).sample(assign, priors, gt_boxes, gt_labels)
    assert result.priors.shape == (1, 5, 4)
    assert torch.equal(result.priors[0, 0], gt_boxes[0, 0])
    assert torch.equal(result.priors[0, 2:], priors)
    assert result.assign.gt_index.tolist() == [[0, IGNORED, NEGATIVE, NEGATIVE, NEGATIVE]]
    assert result.assign.labels.tolist() == [[2, -1, -1, -1, -1]]
    assert result.assign.max_iou[0, :2].tolist() == [1.0, 0.0]
    assert result.gt_flags.tolist() == [[True, False, False, False, False]]
    assert result.pos_mask.tolist() == [[True, False, False, False, False]]
    assert result.num_pos.tolist() == [1] and result.num_neg.tolist() == [3]


def test_seeded_generator_is_reproducible_and_draws_vary():
    sampler = RandomSampler(num=8, pos_fraction=0.25, add_gt_as_proposals=False)

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return sampler.sample(ASSIGN, PRIORS, GT_BOXES, GT_LABELS, generator)

    a, b = draw(7), draw(7)
    assert torch.equal(a.pos_mask, b.pos_mask) and torch.equal(a.neg_mask, b.neg_mask)
    seen = torch.zeros(20, dtype=torch.bool)
    for seed in range(40):
        seen |= draw(seed).pos_mask[0]
    assert seen[:10].all() and not seen[10:].any()  # every positive gets drawn sometimes


def test_config_build_and_validation():
    sampler = SAMPLERS.build(RandomSamplerConfig(num=256, pos_fraction=0.5))
    assert isinstance(sampler, RandomSampler) and sampler.num_expected_pos == 128
    with pytest.raises(ValidationError):
        RandomSamplerConfig(pos_fraction=1.5)
    with pytest.raises(ValidationError):
        RandomSamplerConfig(num=0)
