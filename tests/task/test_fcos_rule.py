"""FCOS's target rule by hand: the smaller GT wins, regress ranges, centre sampling, regions.

Points are given with their own stride and regress range, so each case is a few rows.
"""

from __future__ import annotations

import pytest
import torch

from detcli.task.assigners import NEGATIVE
from detcli.task.assigners.fcos_rule import (
    INF,
    FCOSTargetAssigner,
    PointCells,
    fcos_regions,
    fcos_targets,
    per_point,
)
from detcli.task.prior_generators import MlvlPointGenerator

K = 3  # background label


def targets(points, gt_boxes, gt_labels, strides=8.0, ranges=(-1.0, INF), **kwargs):
    points = torch.tensor(points)
    num = points.shape[0]
    stride = torch.as_tensor(strides, dtype=torch.float32).reshape(-1, 1).expand(num, 2)
    rng = torch.as_tensor(ranges, dtype=torch.float32).reshape(-1, 2).expand(num, 2)
    return fcos_targets(points, stride, rng, torch.tensor([gt_boxes]), torch.tensor([gt_labels]),
                        K, **kwargs)


def test_a_point_inside_two_gts_takes_the_smaller_one():
    big, small = [0.0, 0, 40, 40], [10.0, 10, 30, 34]  # areas 1600 and 480
    t = targets([[20.0, 20], [5, 5], [50, 50]], [big, small], [0, 2])
    assert t.labels.tolist() == [[2, 0, K]]
    assert t.gt_index.tolist() == [[1, 0, NEGATIVE]]
    # (l, t, r, b) to the matched GT; zeros for the background point
    assert t.distances.tolist() == [[[10, 10, 10, 14], [5, 5, 35, 35], [0, 0, 0, 0]]]
    same = targets([[20.0, 20]], [small, small], [1, 2])
    assert same.gt_index.tolist() == [[0]]  # equal areas: the lower slot


def test_regress_ranges_pick_the_level_by_the_largest_distance():
    gt_wide, gt_small, gt_edge = [0.0, 0, 40, 24], [50.0, 50, 60, 60], [100.0, 100, 132, 116]
    low, high = (-1.0, 16.0), (16.0, INF)
    points = [[12.0, 12], [12, 12],    # wide: (12, 12, 28, 12), largest 28
              [54, 56], [54, 56],      # small: (4, 6, 6, 4), largest 6
              [116, 108], [116, 108]]  # edge: (16, 8, 16, 8), largest exactly 16
    ranges = [low, high, low, high, low, high]
    t = targets(points, [gt_wide, gt_small, gt_edge], [0, 1, 2], ranges=ranges)
    assert t.labels.tolist() == [[K, 0, 1, K, 2, 2]]  # both ends of a range are inclusive


def test_center_sampling_keeps_points_near_the_centre_clipped_to_the_gt():
    square, thin = [0.0, 0, 64, 64], [100.0, 0, 110, 64]
    # stride 8, radius 1.5: square's region [20, 20, 44, 44]; thin's [95, 20, 117, 44] clipped
    # to [100, 20, 110, 44]
    points = [[18.0, 30], [24, 40], [108, 30], [108, 50]]
    plain = targets(points, [square, thin], [0, 1])
    assert plain.labels.tolist() == [[0, 0, 1, 1]]
    sampled = targets(points, [square, thin], [0, 1], center_sampling=True,
                      center_sample_radius=1.5)
    assert sampled.labels.tolist() == [[K, 0, 1, K]]
    # the regressed distances stay those to the GT box, not to the centre region
    assert sampled.distances[0, 1].tolist() == [24, 40, 40, 24]


def test_batched_images_padding_slots_and_no_gt():
    points = torch.tensor([[20.0, 20], [70, 70]])
    strides = torch.full((2, 2), 8.0)
    ranges = torch.tensor([[-1.0, INF]]).expand(2, 2)
    boxes = torch.tensor([[[0.0, 0, 40, 40], [0, 0, 0, 0]], [[60.0, 60, 80, 80], [0, 0, 30, 30]]])
    labels = torch.tensor([[1, -1], [0, 2]])
    t = fcos_targets(points, strides, ranges, boxes, labels, K)
    assert t.labels.tolist() == [[1, K], [2, 0]]
    empty = fcos_targets(points, strides, ranges, torch.zeros(2, 0, 4),
                         torch.zeros(2, 0, dtype=torch.long), K)
    assert empty.labels.tolist() == [[K, K], [K, K]] and not empty.positive.any()


def test_per_point_repeats_each_levels_row():
    table = torch.tensor([[-1.0, 64], [64, 128]])
    assert per_point(table, [2, 1]).tolist() == [[-1, 64], [-1, 64], [64, 128]]


def test_regions_by_hand():
    """Level 0 range [-1, 16], level 1 [16, INF]. A 40 x 24 box cannot fit level 0 (a point
    needs every distance <= 16: x in [40 - 16, 0 + 16], empty); on level 1 every inside point
    qualifies. A 10 x 10 box fits level 0 whole and is too small for level 1 everywhere."""
    gts = torch.tensor([[0.0, 0, 40, 24], [50.0, 50, 60, 60]])
    regions = fcos_regions(gts, [(8, 8), (32, 32)], [(-1, 16), (16, INF)])
    assert regions.eligible[0].tolist() == [[24, 8, 16, 16], [50, 50, 60, 60]]
    assert regions.eligible[1].tolist() == [[0, 0, 40, 24], [50, 50, 60, 60]]
    assert regions.too_close[1].tolist() == [[24, 8, 16, 16], [50, 50, 60, 60]]
    assert regions.center is None
    sampled = fcos_regions(gts, [(8, 8), (32, 32)], [(-1, 16), (16, INF)], True, 1.5)
    assert sampled.center[0].tolist() == [[8, 0, 32, 24], [50, 50, 60, 60]]


def test_regions_agree_with_the_rule_on_a_grid_of_points():
    gts = torch.tensor([[3.0, 5, 45, 29], [20.0, 18, 31, 27]])
    strides, ranges = [(8, 8), (16, 16)], [(-1, 12), (12, INF)]
    xs = torch.arange(0.25, 60, 1.0)
    yy, xx = torch.meshgrid(xs, xs, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)  # (P, 2), off the borders
    for center_sampling in (False, True):
        regions = fcos_regions(gts, strides, ranges, center_sampling, 1.5)
        for level, (stride, rng) in enumerate(zip(strides, ranges)):
            for g in range(2):
                t = targets(points.tolist(), [gts[g].tolist()], [0], strides=float(stride[0]),
                            ranges=rng, center_sampling=center_sampling)
                inside = _inside(points, regions.eligible[level, g]) & \
                    ~_inside(points, regions.too_close[level, g])
                assert torch.equal(t.positive[0], inside), (center_sampling, level, g)


def _inside(points, box):
    return ((points[:, 0] > box[0]) & (points[:, 0] < box[2])
            & (points[:, 1] > box[1]) & (points[:, 1] < box[3]))


def test_target_assigner_over_cells_matches_the_rule():
    cells = PointCells(MlvlPointGenerator(strides=[8, 16]))
    priors = cells.grid_priors([(4, 4), (2, 2)])
    assert priors[1][0].tolist() == [0, 0, 16, 16]  # point (8, 8), stride 16
    assigner = FCOSTargetAssigner(strides=[(8, 8), (16, 16)],
                                  regress_ranges=[(-1, 8), (8, INF)])
    result = assigner.assign(torch.cat(priors), torch.tensor([[[0.0, 0, 30, 30]]]),
                             torch.tensor([[1]]), num_level_priors=[16, 4])
    # level 0 points have a largest distance >= 30 - 20 = 10 > 8: none; level 1: all 4 inside
    assert result.gt_index.tolist() == [[NEGATIVE] * 16 + [0, 0, 0, 0]]
    assert result.labels.tolist() == [[-1] * 16 + [1, 1, 1, 1]]
    assert result.max_iou[0, 16].item() == pytest.approx(256 / 900)  # cell [0, 0, 16, 16]
