"""DynamicSoftLabelAssigner on hand-computed cases: the cost terms of one prior and one GT, and
the dynamic-k matching of a small cost matrix written out below."""

from __future__ import annotations

import math

import pytest
import torch

from detcli.task.assigners.assign_result import IGNORED, NEGATIVE
from detcli.task.assigners.dynamic_soft_label import (
    DynamicSoftLabelAssigner,
    SoftLabelCosts,
)


def test_cost_terms_of_one_prior_and_one_gt():
    # a point at (8, 8), stride 8; GT [0, 0, 16, 16] of class 1 (centre (8, 8)); predicted box
    # [0, 0, 16, 8] (IoU 0.5), logits (0, 0)
    priors = torch.tensor([[8.0, 8.0, 8.0, 8.0]])
    costs = DynamicSoftLabelAssigner().costs(
        priors, torch.tensor([[[0.0, 0.0, 16.0, 16.0]]]), torch.tensor([[1]]),
        pred_boxes=torch.tensor([[[0.0, 0.0, 16.0, 8.0]]]), pred_logits=torch.zeros(1, 1, 2))
    assert costs.ious.item() == pytest.approx(0.5)
    assert costs.iou_cost.item() == pytest.approx(-3 * math.log(0.5 + 1e-7))  # 2.0794
    assert costs.center_prior.item() == pytest.approx(10 ** (0 - 3.0))  # distance 0 strides
    # class 0 (target 0): BCE(0, 0) * 0.5 ** 2 = ln 2 / 4; class 1 (target 0.5): * |0.5 - 0.5|
    assert costs.cls_cost.item() == pytest.approx(math.log(2) / 4)
    assert costs.candidate.tolist() == [[True]]
    assert costs.dynamic_k.tolist() == [[1]]  # int(0.5) = 0, at least 1


def test_soft_centre_prior_grows_tenfold_per_stride():
    priors = torch.tensor([[8.0, 8.0, 8.0, 8.0], [24.0, 8.0, 8.0, 8.0], [16.0, 16.0, 16.0, 16.0]])
    gt = torch.tensor([[[0.0, 0.0, 40.0, 16.0]]])  # centre (20, 8)
    costs = DynamicSoftLabelAssigner(soft_center_radius=3.0).costs(
        priors, gt, torch.tensor([[0]]), pred_boxes=gt.expand(1, 3, 4),
        pred_logits=torch.zeros(1, 3, 1))
    # distances: 12 px / 8 = 1.5, 4 / 8 = 0.5, sqrt(16 + 64) / 16 strides
    expected = [10 ** (1.5 - 3), 10 ** (0.5 - 3), 10 ** (math.sqrt(80) / 16 - 3)]
    torch.testing.assert_close(costs.center_prior[0, :, 0], torch.tensor(expected))


def small_case() -> tuple[SoftLabelCosts, torch.Tensor]:
    """Five priors, two GTs and a padding slot; topk 3.

    IoU (prior x GT):      cost:                 candidate
      r0  0.9  0.1          1.0  5.0              yes
      r1  0.8  0.6          2.0  1.5              yes
      r2  0.5  0.7          3.0  0.5              yes
      r3  0.1  0.8          4.0  2.0              yes
      r4  0.0  0.0          0.1  0.1              no (inside no GT): never taken

    dynamic k: GT0 int(0.9 + 0.8 + 0.5) = int(2.2) = 2, GT1 int(0.8 + 0.7 + 0.6) = int(2.1) = 2.
    GT0 takes its 2 cheapest, r0 and r1; GT1 takes r2 and r1. r1 is taken twice and keeps the
    GT of least cost, GT1 (1.5 < 2.0). -> r0: GT0 (IoU 0.9), r1: GT1 (0.6), r2: GT1 (0.7),
    r3 and r4 negative.
    """
    ious = torch.tensor([[0.9, 0.1, 1.0], [0.8, 0.6, 1.0], [0.5, 0.7, 1.0], [0.1, 0.8, 1.0],
                         [0.0, 0.0, 1.0]])[None]  # (1, 5, 3); slot 2 is padding
    cost = torch.tensor([[1.0, 5.0, 0.0], [2.0, 1.5, 0.0], [3.0, 0.5, 0.0], [4.0, 2.0, 0.0],
                         [0.1, 0.1, 0.0]])[None]
    zeros = torch.zeros_like(cost)
    candidate = torch.tensor([[True, True, True, True, False]])
    labels = torch.tensor([[2, 0, -1]])
    terms = SoftLabelCosts(cls_cost=cost, iou_cost=zeros, center_prior=zeros, ious=ious,
                           candidate=candidate, dynamic_k=torch.tensor([[2, 2, 0]]))
    return terms, labels


def test_dynamic_k_matching_of_a_small_cost_matrix():
    terms, labels = small_case()
    result = DynamicSoftLabelAssigner(topk=3).match(terms, labels)
    assert result.gt_index.tolist() == [[0, 1, 1, NEGATIVE, NEGATIVE]]
    assert result.labels.tolist() == [[2, 0, 0, -1, -1]]
    torch.testing.assert_close(result.max_iou, torch.tensor([[0.9, 0.6, 0.7, 0.0, 0.0]]))
    assert result.num_gts.tolist() == [2]


def test_invalid_priors_are_ignored():
    terms, labels = small_case()
    valid = torch.tensor([[True, True, True, True, False]])
    result = DynamicSoftLabelAssigner(topk=3).match(terms, labels, prior_valid=valid)
    assert result.gt_index.tolist() == [[0, 1, 1, NEGATIVE, IGNORED]]


def test_dynamic_k_from_the_ious_of_the_candidates():
    # GT [0, 0, 32, 32]; four points inside it, one outside whose box would overlap most
    priors = torch.tensor([[8.0, 8.0, 8, 8], [24.0, 8.0, 8, 8], [8.0, 24.0, 8, 8],
                           [24.0, 24.0, 8, 8], [40.0, 40.0, 8, 8]])
    gt = torch.tensor([[[0.0, 0.0, 32.0, 32.0]]])
    boxes = torch.tensor([[[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 32.0, 16.0], [0.0, 0.0, 16.0, 32.0],
                           [0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 32.0, 32.0]]])
    costs = DynamicSoftLabelAssigner(topk=3).costs(priors, gt, torch.tensor([[0]]),
                                                   pred_boxes=boxes,
                                                   pred_logits=torch.zeros(1, 5, 1))
    assert costs.candidate.tolist() == [[True, True, True, True, False]]
    # IoUs 1, 0.5, 0.5, 0.25 (the outside point's 1 does not count): top 3 sum 2.0 -> k = 2
    assert costs.dynamic_k.tolist() == [[2]]
    result = DynamicSoftLabelAssigner(topk=3).assign(
        priors, gt, torch.tensor([[0]]), pred_boxes=boxes, pred_logits=torch.zeros(1, 5, 1))
    assert (result.gt_index >= 0).sum().item() == 2
    assert result.gt_index[0, 0].item() == 0  # the exact box is the cheapest


def test_an_image_without_gt_has_only_negatives():
    priors = torch.tensor([[8.0, 8.0, 8, 8], [24.0, 8.0, 8, 8]])
    result = DynamicSoftLabelAssigner().assign(
        priors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long),
        pred_boxes=torch.zeros(2, 2, 4), pred_logits=torch.zeros(2, 2, 3))
    assert result.gt_index.tolist() == [[NEGATIVE] * 2] * 2
    assert result.max_iou.abs().sum().item() == 0
