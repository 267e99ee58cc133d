"""Hard and soft NMS on four boxes whose overlaps are worked out by hand.

Box 0 [0,0,10,10] and box 1 [1,1,11,11]: intersection 81, union 119, IoU 81/119 = 0.680672.
Box 0 and box 2 [0,0,10,9]: 90/100 = 0.9.  Box 1 and box 2: 72/118 = 0.610169.
Box 3 is far from all.
"""

import math

import pytest
import torch
import torchvision

from detcli.errors import ConfigError
from detcli.ops.nms import batched_nms, batched_soft_nms

BOXES = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [0., 0., 10., 9.],
                      [50., 50., 60., 60.]])
SCORES = torch.tensor([0.9, 0.8, 0.7, 0.6])
ONE_CLUSTER = torch.zeros(4, dtype=torch.long)
IOU01, IOU02, IOU12 = 81 / 119, 0.9, 72 / 118


def test_hard_nms_one_cluster():
    keep = batched_nms(BOXES, SCORES, ONE_CLUSTER, 0.5)
    assert keep.tolist() == [0, 3]  # 1 (0.68) and 2 (0.9) overlap box 0 above 0.5
    assert keep.tolist() == torchvision.ops.nms(BOXES, SCORES, 0.5).tolist()


def test_hard_nms_threshold_is_strict_and_clusters_separate():
    assert batched_nms(BOXES, SCORES, ONE_CLUSTER, 0.7).tolist() == [0, 1, 3]  # 0.68 < 0.7
    idxs = torch.tensor([0, 1, 0, 0])  # box 1 alone in its cluster
    assert batched_nms(BOXES, SCORES, idxs, 0.5).tolist() == [0, 1, 3]
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long),
                       0.5).numel() == 0


def test_soft_nms_linear():
    keep, scores = batched_soft_nms(BOXES, SCORES, ONE_CLUSTER, iou_threshold=0.3,
                                    method="linear", min_score=1e-3)
    # pick 0 (0.9): 1 -> 0.8 * (1 - 0.680672) = 0.255462, 2 -> 0.7 * (1 - 0.9) = 0.07, 3 stays
    # pick 3 (0.6): IoU 0 with both; pick 1: 2 -> 0.07 * (1 - 0.610169) = 0.027288; pick 2
    assert keep.tolist() == [0, 3, 1, 2]
    expected = [0.9, 0.6, 0.8 * (1 - IOU01), 0.7 * (1 - IOU02) * (1 - IOU12)]
    assert scores.tolist() == pytest.approx(expected, abs=1e-6)
    assert scores.tolist() == pytest.approx([0.9, 0.6, 0.255462, 0.027288], abs=1e-6)


def test_soft_nms_linear_below_threshold_keeps_score_and_min_score_drops():
    keep, scores = batched_soft_nms(BOXES, SCORES, ONE_CLUSTER, iou_threshold=0.7,
                                    method="linear", min_score=0.05)
    # 0.680672 < 0.7: box 1 keeps 0.8; box 2 -> 0.07, then by box 1 (0.61 < 0.7) stays 0.07
    assert keep.tolist() == [0, 1, 3, 2]
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.6, 0.07], abs=1e-6)
    keep, _ = batched_soft_nms(BOXES, SCORES, ONE_CLUSTER, iou_threshold=0.3,
                               method="linear", min_score=0.05)
    assert keep.tolist() == [0, 3, 1]  # box 2 falls to 0.027 < 0.05


def test_soft_nms_gaussian_ignores_threshold():
    keep, scores = batched_soft_nms(BOXES, SCORES, ONE_CLUSTER, iou_threshold=0.99, sigma=0.5,
                                    method="gaussian", min_score=1e-3)
    s1 = 0.8 * math.exp(-IOU01 ** 2 / 0.5)  # 0.316709
    s2 = 0.7 * math.exp(-IOU02 ** 2 / 0.5) * math.exp(-IOU12 ** 2 / 0.5)  # 0.065790
    assert keep.tolist() == [0, 3, 1, 2]
    assert scores.tolist() == pytest.approx([0.9, 0.6, s1, s2], abs=1e-6)
    assert scores.tolist() == pytest.approx([0.9, 0.6, 0.316709, 0.065790], abs=1e-6)


def test_soft_nms_clusters_do_not_interact():
    idxs = torch.tensor([0, 1, 0, 1])
    keep, scores = batched_soft_nms(BOXES, SCORES, idxs, iou_threshold=0.3, method="linear")
    # cluster 0: {0, 2} -> 2 decays to 0.07; cluster 1: {1, 3} do not overlap
    assert keep.tolist() == [0, 1, 3, 2]
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.6, 0.07], abs=1e-6)


def test_soft_nms_edge_cases():
    keep, scores = batched_soft_nms(BOXES, torch.tensor([0.9, 0.8, 0.7, 0.0005]), ONE_CLUSTER)
    assert 3 not in keep.tolist()  # starts below min_score
    keep, scores = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0),
                                    torch.zeros(0, dtype=torch.long))
    assert keep.numel() == 0 and scores.numel() == 0
    with pytest.raises(ConfigError, match="'hard'"):
        batched_soft_nms(BOXES, SCORES, ONE_CLUSTER, method="hard")
