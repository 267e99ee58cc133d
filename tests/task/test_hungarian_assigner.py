"""The Hungarian assignment on a written-out cost matrix, and each match cost on known boxes."""

from __future__ import annotations

import math

import pytest
import torch

from detcli.errors import TrainingError
from detcli.task.assigners.hungarian import HungarianAssigner, detr_match_costs
from detcli.task.assigners.match_costs import (
    BBoxL1Cost,
    ClassificationCost,
    FocalLossCost,
    IoUCost,
)

COST = torch.tensor([[4.0, 1.0, 3.0],
                     [2.0, 0.0, 5.0],
                     [3.0, 2.0, 2.0],
                     [9.0, 9.0, 9.0]])  # (Q = 4, G = 3)


def fixed_cost_assigner(cost: torch.Tensor) -> HungarianAssigner:
    """An assigner whose only cost is ``cost`` (M, Q, G), whatever the predictions."""
    assigner = HungarianAssigner(match_costs=detr_match_costs())
    assigner.match_costs = [lambda *args: cost]
    return assigner


def test_minimum_total_cost_on_a_written_out_matrix():
    # the six pairings of queries 0-2 cost 6, 5, 6, 9, 11, 7: the minimum pairs
    # query 0 -> GT 1, query 1 -> GT 0, query 2 -> GT 2; query 3 is left as background
    assigner = fixed_cost_assigner(COST[None])
    labels = torch.tensor([[2, 0, 1]])
    match = assigner.match(torch.zeros(1, 4, 3), torch.zeros(1, 4, 4), torch.zeros(1, 3, 4),
                           labels, torch.tensor([[10, 10]]))
    assert match.result.gt_index.tolist() == [[1, 0, 2, -1]]
    assert match.result.labels.tolist() == [[0, 2, 1, -1]]
    assert match.num_matched == (3,)
    assert match.result.num_gts.tolist() == [3]


def test_padding_slots_are_never_matched_and_an_empty_image_is_all_background():
    cost = torch.stack([COST, COST])  # (2, 4, 3)
    labels = torch.tensor([[2, -1, 1], [-1, -1, -1]])  # slot 1 of image 0 is padding
    assigner = fixed_cost_assigner(cost)
    match = assigner.match(torch.zeros(2, 4, 3), torch.zeros(2, 4, 4), torch.zeros(2, 3, 4),
                           labels, torch.tensor([[10, 10], [10, 10]]))
    # without column 1: query 1 -> GT 0 (2) and query 2 -> GT 2 (2) beat every other pair
    assert match.result.gt_index.tolist() == [[-1, 0, 2, -1], [-1, -1, -1, -1]]
    assert match.num_matched == (2, 0)


def test_non_finite_costs_are_a_training_error():
    cost = COST.clone()
    cost[0, 0] = float("nan")
    assigner = fixed_cost_assigner(cost[None])
    with pytest.raises(TrainingError, match="NaN or infinite"):
        assigner.match(torch.zeros(1, 4, 3), torch.zeros(1, 4, 4), torch.zeros(1, 3, 4),
                       torch.tensor([[0, 1, 2]]), torch.tensor([[10, 10]]))


def test_the_default_costs_prefer_the_query_on_the_gt():
    assigner = HungarianAssigner(match_costs=detr_match_costs())
    gt = torch.tensor([[[10.0, 10.0, 50.0, 50.0]]])
    boxes = torch.tensor([[[60.0, 60.0, 90.0, 90.0], [11.0, 9.0, 49.0, 52.0]]])
    match = assigner.match(torch.zeros(1, 2, 4), boxes, gt, torch.tensor([[1]]),
                           torch.tensor([[100, 100]]))
    assert match.result.gt_index.tolist() == [[-1, 0]]
    iou = (38 * 40) / (40 * 40 + 38 * 43 - 38 * 40)  # the matched pair's IoU, for analysis
    assert match.result.max_iou[0, 1].item() == pytest.approx(iou, rel=1e-5)


def test_classification_cost_is_minus_the_softmax_probability():
    scores = torch.log(torch.tensor([[[1.0, 2.0, 1.0]]]))  # softmax (0.25, 0.5, 0.25)
    cost = ClassificationCost(weight=2.0)(scores, None, None, torch.tensor([[1, 0]]), None)
    torch.testing.assert_close(cost, torch.tensor([[[-1.0, -0.5]]]))


def test_focal_loss_cost_at_probability_one_half():
    cost = FocalLossCost(alpha=0.25, gamma=2.0)(torch.zeros(1, 1, 2), None, None,
                                                torch.tensor([[0]]), None)
    # pos: 0.25 * 0.5^2 * ln 2, neg: 0.75 * 0.5^2 * ln 2
    assert cost.item() == pytest.approx((0.0625 - 0.1875) * math.log(2), rel=1e-6)


def test_bbox_l1_cost_on_normalised_boxes():
    img_shapes = torch.tensor([[100, 200]])  # h 100, w 200
    pred = torch.tensor([[[0.0, 0.0, 100.0, 50.0]]])
    gt = torch.tensor([[[100.0, 50.0, 200.0, 100.0]]])
    # xywh: (0.25, 0.25, 0.5, 0.5) against (0.75, 0.75, 0.5, 0.5)
    xywh = BBoxL1Cost(box_format="xywh", weight=5.0)(None, pred, gt, None, img_shapes)
    assert xywh.item() == pytest.approx(5.0 * 1.0)
    # xyxy: (0, 0, 0.5, 0.5) against (0.5, 0.5, 1, 1)
    xyxy = BBoxL1Cost(box_format="xyxy")(None, pred, gt, None, img_shapes)
    assert xyxy.item() == pytest.approx(2.0)


def test_iou_cost_is_minus_the_giou_or_iou():
    pred = torch.tensor([[[0.0, 0.0, 2.0, 2.0]]])
    gt = torch.tensor([[[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]]])
    # overlap 1, union 7, enclosing 9: GIoU 1/7 - 2/9 = -5/63; the same box: 1
    giou = IoUCost(iou_mode="giou", weight=2.0)(None, pred, gt, None, None)
    torch.testing.assert_close(giou, torch.tensor([[[2.0 * 5 / 63, -2.0]]]))
    iou = IoUCost(iou_mode="iou")(None, pred, gt, None, None)
    torch.testing.assert_close(iou, torch.tensor([[[-1 / 7, -1.0]]]))
