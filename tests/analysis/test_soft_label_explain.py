"""The dynamic soft-label assigner explained (detcli/analysis/soft_label_explain.py) on a case
worked by hand, and the stand-in predictions (detcli/analysis/stand_in.py).

Hand case: one level, stride 8, a 4 x 4 map (input 32 x 32), points at x, y in {0, 8, 16, 24}
(offset 0). Two classes; every logit 0, so every score is 0.5.

    GT0 [2, 4, 20, 22] label 0 (centre (11, 13))  inside: (8,8) (16,8) (8,16) (16,16)
    GT1 [12, 12, 30, 30] label 1 (centre (21, 21)) inside: (16,16) (24,16) (16,24) (24,24)

so 7 candidate points. Predicted boxes: (8,8), (16,8), (8,16) predict GT0; (24,16), (16,24)
predict GT1; (16,16) predicts [12, 12, 30, 21] (GT1's top half: IoU 0.5 with GT1, 72 / 414 =
0.173913 with GT0); (24,24) predicts [12, 12, 30, 27] (IoU 270 / 324 = 0.833333 with GT1,
80 / 514 = 0.155642 with GT0). A box that is one GT has IoU 80 / 568 = 0.140845 with the other.

Costs, with p = 0.5 everywhere: the soft-label classification cost of a pair of IoU y is
BCE(0, y) |y - p|^2 + BCE(0, 0) p^2 = ln 2 ((y - 0.5)^2 + 0.25) (BCE at logit 0 is ln 2 for
any target); the IoU cost -3 ln(y + 1e-7); the centre prior 10^(d / 8 - 3), d the distance to
the GT's centre.

    GT0: top-13 IoU sum 1 + 1 + 1 + 0.173913 + 0.155642 + 2 x 0.140845 = 3.611245 -> k = 3
         (8,16) 0.346574 + 0 + 0.003391 = 0.349964   chosen, positive
         (8,8)  0.346574 + 0 + 0.005356 = 0.351930   chosen, positive
         (16,8) 0.346574 + 0 + 0.007654 = 0.354227   chosen, positive
         (16,16) 0.246991 + 5.247598 + 0.005356 = 5.499945   not chosen
    GT1: top-13 IoU sum 1 + 1 + 0.833333 + 0.5 + 3 x 0.140845 = 3.755869 -> k = 3
         (24,16), (16,24) 0.346574 + 0 + 0.005356 = 0.351930   chosen, positive
         (24,24) 0.250303 + 0.546964 + 0.003391 = 0.800658   chosen, positive (soft label 0.833)
         (16,16) 0.173287 + 2.079441 + 0.007654 = 2.260382   not chosen

(16,16) lies inside both GTs and is taken by neither: a negative. Mean soft labels: GT0 1.0,
GT1 (1 + 1 + 0.833333) / 3 = 0.944444.
"""

from __future__ import annotations

import math

import pytest
import torch

from detcli.analysis.assignment import shaped_images
from detcli.analysis.soft_label_explain import Predictions, explain_costs
from detcli.analysis.stand_in import stand_in_predictions
from detcli.models.dense_heads.rtmdet_head import RTMDetSepBNHead
from detcli.structures.batch import DetTargets

GT_BOXES = torch.tensor([[[2.0, 4, 20, 22], [12, 12, 30, 30]]])  # (1, 2, 4)
GT_LABELS = torch.tensor([[0, 1]])
PREDICTED = {(8, 8): [2, 4, 20, 22], (16, 8): [2, 4, 20, 22], (8, 16): [2, 4, 20, 22],
             (16, 16): [12, 12, 30, 21], (24, 16): [12, 12, 30, 30],
             (16, 24): [12, 12, 30, 30], (24, 24): [12, 12, 30, 27]}


def _index(x: int, y: int) -> int:
    return (y // 8) * 4 + x // 8  # row-major over the 4 x 4 map


def _hand_case():
    head = RTMDetSepBNHead(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1,
                           strides=(8,))
    xs = torch.arange(4.0) * 8
    points = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), dim=-1).reshape(-1, 2)  # (16, 2)
    boxes = torch.cat([points - 4, points + 4], dim=-1)[None].clone()  # (1, 16, 4): cells
    for (x, y), box in PREDICTED.items():
        boxes[0, _index(x, y)] = torch.tensor(box, dtype=torch.float32)
    logits = torch.zeros(1, 16, 2)
    outputs = head.outputs_from_predictions(boxes, logits, [(4, 4)])
    images = shaped_images(1, (32, 32), None, torch.device("cpu"))
    return head, boxes, logits, outputs, images


def test_outputs_from_predictions_is_the_inverse_of_what_the_head_hands_its_assigner():
    head, boxes, logits, outputs, images = _hand_case()
    assert [tuple(x.shape) for x in outputs.cls_logits] == [(1, 2, 4, 4)]
    assert [tuple(x.shape) for x in outputs.bbox_deltas] == [(1, 4, 4, 4)]
    pred = head.predicted_priors(outputs, images)
    torch.testing.assert_close(pred.boxes, boxes)
    torch.testing.assert_close(pred.logits, logits)
    assert pred.points[_index(16, 8)].tolist() == [16.0, 8.0, 8.0, 8.0]


def test_the_explanation_is_the_hand_worked_one_and_agrees_with_the_assignment():
    head, _, _, outputs, images = _hand_case()
    targets = DetTargets(GT_BOXES, GT_LABELS, torch.zeros(1, 0, 4),
                         torch.zeros(1, 0, dtype=torch.bool))
    gt_index = head.explain_assignment(outputs, images, targets).gt_index[0]  # (16,)
    explained = explain_costs(head.assigner, head, Predictions(outputs, "hand"), images,
                              GT_BOXES[0], GT_LABELS[0], torch.zeros(16, dtype=torch.long),
                              gt_index)
    assert explained.num_candidates == 7
    gt0, gt1 = explained.gts
    assert (gt0.num_inside, gt0.dynamic_k, gt0.num_pos) == (4, 3, 3)
    assert (gt1.num_inside, gt1.dynamic_k, gt1.num_pos) == (4, 3, 3)
    assert gt0.top_iou_sum == pytest.approx(3.611245, abs=1e-5)
    assert gt1.top_iou_sum == pytest.approx(3.755869, abs=1e-5)
    assert gt0.mean_soft_label == pytest.approx(1.0, abs=1e-6)
    assert gt1.mean_soft_label == pytest.approx(0.944444, abs=1e-5)
    ranked0 = [(c.point, round(c.cost, 5), c.chosen, c.positive) for c in gt0.cheapest[:4]]
    assert ranked0 == [((8.0, 16.0), 0.34996, True, True), ((8.0, 8.0), 0.35193, True, True),
                       ((16.0, 8.0), 0.35423, True, True), ((16.0, 16.0), 5.49995, False, False)]
    shared = [c for c in gt1.cheapest if c.point == (16.0, 16.0)][0]
    assert (shared.cls_cost, shared.iou_cost, shared.center_prior) == pytest.approx(
        (math.log(2) * 0.25, -3 * math.log(0.5 + 1e-7), 10 ** (math.sqrt(50) / 8 - 3)), rel=1e-5)
    assert not shared.chosen and int(gt_index[_index(16, 16)]) == -1  # inside both, taken by neither
    assert [c.point for c in gt1.cheapest if c.positive] == \
        [(16.0, 24.0), (24.0, 16.0), (24.0, 24.0)] or \
        [c.point for c in gt1.cheapest if c.positive] == [(24.0, 16.0), (16.0, 24.0), (24.0, 24.0)]
    assert explained.chosen.sum(axis=1).tolist() == [3, 3]
    assert explained.inside[:, _index(16, 16)].tolist() == [True, True]
    assert len(gt0.cheapest) == 7  # every candidate of any GT is a candidate of GT0


def test_stand_in_predicts_the_smallest_gt_a_point_is_in_with_its_iou_as_score():
    cells = torch.tensor([[0.0, 0, 8, 8], [8, 8, 16, 16], [20, 20, 28, 28]])  # points (4,4) (12,12) (24,24)
    gt_boxes = torch.tensor([[[0.0, 0, 30, 30], [10, 10, 14, 14], [0, 0, 1, 1]]])
    gt_labels = torch.tensor([[2, 0, -1]])  # the last slot is padding
    boxes, logits = stand_in_predictions(cells, gt_boxes, gt_labels, num_classes=3, jitter=0.0)
    assert boxes[0].tolist() == [[0, 0, 30, 30], [10, 10, 14, 14], [0, 0, 30, 30]]
    scores = logits.sigmoid()[0]
    torch.testing.assert_close(scores, torch.tensor([[1e-5, 1e-5, 1 - 1e-5], [1 - 1e-5, 1e-5, 1e-5],
                                                     [1e-5, 1e-5, 1 - 1e-5]]), atol=1e-6, rtol=0)
    outside, _ = stand_in_predictions(cells, gt_boxes[:, 1:2], gt_labels[:, 1:2], 3, jitter=0.0)
    assert outside[0, 0].tolist() == [0, 0, 8, 8]  # in no GT: its own cell


def test_stand_in_jitter_is_seeded_and_scores_are_the_jittered_boxes_iou():
    cells = torch.tensor([[8.0, 8, 16, 16]])
    gt_boxes, gt_labels = torch.tensor([[[0.0, 0, 40, 20]]]), torch.tensor([[1]])
    first, logits = stand_in_predictions(cells, gt_boxes, gt_labels, 2,
                                         generator=torch.Generator().manual_seed(3))
    again, _ = stand_in_predictions(cells, gt_boxes, gt_labels, 2,
                                    generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, again)
    noise = torch.randn(1, 1, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first, gt_boxes + noise * 0.1 * torch.tensor([40.0, 20, 40, 20]))
    x1, y1, x2, y2 = first[0, 0].tolist()
    inter = (min(x2, 40) - max(x1, 0)) * (min(y2, 20) - max(y1, 0))
    iou = inter / ((x2 - x1) * (y2 - y1) + 800 - inter)
    assert logits.sigmoid()[0, 0, 1].item() == pytest.approx(iou, rel=1e-5)
