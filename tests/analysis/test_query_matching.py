"""The Hungarian matching explained (detcli.analysis.query_matching): three queries, two GT
boxes, DETR's costs written out by hand; the per-layer view; the seeded stand-in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from detcli.analysis.query_matching import explain_matching, stand_in_queries
from detcli.registry import ASSIGNERS
from detcli.task.assigners.hungarian import HungarianAssignerConfig
from detcli.task.assigners.match_costs import ClassificationCostConfig

LN2 = math.log(2)
GT = torch.tensor([[0.0, 0.0, 50.0, 50.0], [50.0, 50.0, 100.0, 100.0]])  # labels 0 and 1
LABELS = torch.tensor([0, 1])
# softmax over (class 0, class 1, background): q0 (1/2, 1/4, 1/4), q1 (1/3, 1/3, 1/3),
# q2 (1/4, 1/2, 1/4)
LOGITS = torch.tensor([[LN2, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, LN2, 0.0]])
# q0 on GT 0, q1 on GT 1, q2 the whole 100 x 100 image
BOXES = torch.tensor([[0.0, 0.0, 50.0, 50.0], [50.0, 50.0, 100.0, 100.0], [0.0, 0.0, 100.0, 100.0]])


def detr_assigner():
    return ASSIGNERS.build(HungarianAssignerConfig())  # Classification 1, L1 (cxcywh) 5, GIoU 2


def test_three_queries_two_gts_with_detrs_costs_written_out():
    # ClassificationCost x1 = -p(GT class): GT0 (label 0): q0 -1/2, q1 -1/3, q2 -1/4;
    #                                        GT1 (label 1): q0 -1/4, q1 -1/3, q2 -1/2
    # BBoxL1Cost x5 on (cx, cy, w, h) / 100: GT0 (.25, .25, .5, .5), GT1 (.75, .75, .5, .5);
    #   q0 = GT0: 0 and |.5| + |.5| = 1 -> 0, 5; q1 = GT1: 5, 0; q2 (.5, .5, 1, 1): 1.5 -> 7.5, 7.5
    # IoUCost x2 = -2 GIoU: equal boxes -2; the touching squares: IoU 0, hull 100 x 100, union
    #   5000 -> GIoU -0.5 -> +1; q2 with either square: IoU 1/4 and the hull is q2 -> -0.5
    # totals: q0 (-2.5, 5.75), q1 (5.6667, -2.3333), q2 (6.75, 6.5): GT0 <- q0, GT1 <- q1
    rows = explain_matching(detr_assigner(), LOGITS[None], BOXES[None], GT, LABELS, (100, 100),
                            ("square", "circle"))
    assert [(r.index, r.class_name, r.query, r.cheapest_query) for r in rows] == \
        [(0, "square", 0, 0), (1, "circle", 1, 1)]
    assert [t.name for t in rows[0].terms] == ["ClassificationCost", "BBoxL1Cost", "IoUCost"]
    assert [t.weight for t in rows[0].terms] == [1.0, 5.0, 2.0]
    assert [t.value for t in rows[0].terms] == pytest.approx([-0.5, 0.0, -2.0], abs=1e-5)
    assert [t.value for t in rows[1].terms] == pytest.approx([-1 / 3, 0.0, -2.0], abs=1e-5)
    assert rows[0].total == pytest.approx(-2.5, abs=1e-5)
    assert rows[1].total == pytest.approx(-7 / 3, abs=1e-5)
    assert rows[0].iou == rows[1].iou == pytest.approx(1.0)
    assert rows[0].query_box == [0.0, 0.0, 50.0, 50.0]
    assert rows[0].layers == []  # one layer: nothing to follow


def test_a_gt_loses_its_cheapest_query_to_another():
    """Classification cost alone: p(class 0) = (.6, .2, .1), p(class 1) = (.3, .2, .25). GT1
    alone would take q0 (-0.3), but GT0 <- q0, GT1 <- q2 costs -0.85, less than any other
    pairing (GT0 <- q1, GT1 <- q0: -0.5)."""
    assigner = ASSIGNERS.build(HungarianAssignerConfig(match_costs=[ClassificationCostConfig()]))
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.25, 0.65]])
    rows = explain_matching(assigner, probs.log()[None], BOXES[None], GT, LABELS, (100, 100))
    assert [(r.query, r.cheapest_query) for r in rows] == [(0, 0), (2, 0)]
    assert [r.total for r in rows] == pytest.approx([-0.6, -0.25], abs=1e-5)


def test_each_layer_has_its_own_matching_and_the_matched_querys_box_moves():
    # layer 0: q0 and q1 have swapped boxes -> its totals q0 (5.5, -2.25), q1 (-2.3333, 5.6667):
    # GT0 <- q1, GT1 <- q0; layer 1 is the first test's: GT0 <- q0, GT1 <- q1
    layer0 = BOXES[[1, 0, 2]]
    rows = explain_matching(detr_assigner(), torch.stack([LOGITS, LOGITS]),
                            torch.stack([layer0, BOXES]), GT, LABELS, (100, 100))
    steps = rows[0].layers
    assert [(s.layer, s.layer_query) for s in steps] == [(0, 1), (1, 0)]
    assert steps[0].box == [50.0, 50.0, 100.0, 100.0] and steps[0].iou == pytest.approx(0.0)
    assert steps[0].layer_box == [0.0, 0.0, 50.0, 50.0]  # layer 0's own match for GT0: q1
    assert steps[1].iou == pytest.approx(1.0)
    assert [s.layer_query for s in rows[1].layers] == [0, 1]


def test_more_gts_than_queries_leaves_one_without_a_query():
    rows = explain_matching(detr_assigner(), LOGITS[None, :1], BOXES[None, :1], GT, LABELS,
                            (100, 100))
    assert [r.query for r in rows] == [0, None]
    assert rows[1].terms == [] and rows[1].total is None and rows[1].iou is None


def test_the_stand_in_is_seeded_and_stays_in_the_image():
    gt = np.array([[10, 10, 40, 30], [50, 20, 90, 60]], np.float32)
    logits, boxes = stand_in_queries(gt, (64, 96), 10, 4, seed=3)
    again = stand_in_queries(gt, (64, 96), 10, 4, seed=3)
    assert logits.shape == (1, 10, 4) and boxes.shape == (1, 10, 4)
    assert torch.equal(boxes, again[1]) and torch.equal(logits, again[0])
    assert not torch.equal(boxes, stand_in_queries(gt, (64, 96), 10, 4, seed=4)[1])
    assert (boxes[..., 0::2] >= 0).all() and (boxes[..., 0::2] <= 96).all()
    assert (boxes[..., 1::2] >= 0).all() and (boxes[..., 1::2] <= 64).all()
    assert (boxes[..., 2:] >= boxes[..., :2]).all()
    # query q is jittered around GT q mod 2: its centre is nearer that GT's than the other's
    centre = (boxes[0, :, :2] + boxes[0, :, 2:]) / 2
    gt_centre = torch.tensor((gt[:, :2] + gt[:, 2:]) / 2)
    nearer = (centre[:, None] - gt_centre[None]).norm(dim=-1).argmin(1)
    assert (nearer == torch.arange(10) % 2).float().mean() >= 0.8


def test_a_group_source_adds_query_groups_to_the_report_and_the_picture(tmp_path):
    """A caller's extra query groups (group_source): a group per GT, here each GT's top-left
    quarter, reported with its GT and drawn as dots in the GT's colour."""
    from detcli.analysis.assign_view import OriginalGT
    from detcli.analysis.query_matching import QueryGroup, visualize_query_matching
    from detcli.config.loader import load_config
    from detcli.viz.canvas import GAP, TITLE_H, distinct_colours
    from detcli.viz.query_picture import draw_query_matching
    from tests.analysis.tiny_data import make_tiny, with_preset

    data = with_preset(make_tiny(tmp_path), "detr_tiny_synth")
    cfg = load_config(data.config).cfg
    gt = OriginalGT.from_boxes([[10, 20, 40, 50], [60, 10, 100, 80]], [0, 1],
                               ("square", "circle", "triangle"))

    def quarters(gt_boxes, gt_labels, img_shape):
        assert img_shape == (192, 256) and gt_labels.tolist() == [0, 1]
        half = (gt_boxes[:, 2:] - gt_boxes[:, :2]) / 2
        boxes = torch.cat([gt_boxes[:, :2], gt_boxes[:, :2] + half], 1).numpy()
        return [QueryGroup("quarters", "each GT's top-left quarter", boxes, np.array([0, 1]))]

    matching = visualize_query_matching(cfg, data.image_a, gt, group_source=quarters)
    (group,) = matching.to_dict()["groups"]
    # network input: the boxes doubled, [20, 40, 80, 100] and [120, 20, 200, 160]
    assert group["boxes"] == [[20.0, 40.0, 50.0, 70.0], [120.0, 20.0, 160.0, 90.0]]
    assert (group["name"], group["gt_index"]) == ("quarters", [0, 1])
    picture = draw_query_matching(matching)
    colours = distinct_colours(2)
    for (cx, cy), colour in zip([(35, 55), (140, 55)], colours):  # the quarters' centres
        assert tuple(picture[GAP + TITLE_H + cy, GAP + cx]) == colour
