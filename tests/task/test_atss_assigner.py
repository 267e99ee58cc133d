"""ATSSAssigner on a written-out case: candidates per level, thresholds, positives.

Two levels, topk 3. Level 0 holds 8 x 8 priors, level 1 16 x 16 priors (rows, centres):

    P0 [0, 4, 8, 12]    (4, 8)      P4 [0, 0, 16, 16]    (8, 8)
    P1 [8, 4, 16, 12]   (12, 8)     P5 [-16, 0, 0, 16]   (-8, 8)
    P2 [0, 14, 8, 22]   (4, 18)     P6 [0, 16, 16, 32]   (8, 24)
    P3 [-8, -8, 0, 0]   (-4, -4)    P7 [32, 32, 48, 48]  (40, 40)

GT A = [0, 0, 8, 16] (centre (4, 8), area 128), label 2. Nearest centres: level 0 P0 (0),
P1 (8), P2 (10) [P3 14.4]; level 1 P4 (4), P5 (12), P6 (16.5) [P7 46.6]. IoUs: P0 64/128 =
1/2, P1 0, P2 16/176 = 1/11, P4 128/256 = 1/2, P5 0, P6 0. Mean 2/11 = 0.181818; unbiased
variance (sum v^2 - 6 mean^2) / 5 = (1/2 + 1/121 - 24/121) / 5 = 7.5/121, std 0.248965;
threshold 0.430783. P0 and P4 reach it, but P4's centre (8, 8) lies on A's right side
(distance 0, not > 0.01): only P0 is positive for A.

GT B = [0, 4, 10, 14] (centre (5, 9), area 100), label 0. Candidates P0 (1.41), P1 (7.07),
P2 (9.06); P4 (3.16), P5 (13.04), P6 (15.30). IoUs: P0 64/100 = 0.64, P1 16/148 = 0.108108,
P2 0, P4 100/256 = 0.390625, P5 0, P6 0. Mean 0.189789, std 0.267490, threshold 0.457280:
P0 is positive for B too, with a higher IoU (0.64 > 0.5), so P0 goes to B and A is left with
no positive.
"""

from __future__ import annotations

import pytest
import torch

from detcli.errors import DetError
from detcli.registry import ASSIGNERS
from detcli.task.assigners import IGNORED, NEGATIVE, ATSSAssigner, ATSSAssignerConfig

NEG, IGN = NEGATIVE, IGNORED
PRIORS = torch.tensor([[0.0, 4, 8, 12], [8, 4, 16, 12], [0, 14, 8, 22], [-8, -8, 0, 0],
                       [0, 0, 16, 16], [-16, 0, 0, 16], [0, 16, 16, 32], [32, 32, 48, 48]])
LEVELS = [4, 4]
GT_A = [0.0, 0, 8, 16]
GT_B = [0.0, 4, 10, 14]
PAD = [0.0, 0, 0, 0]


def batch(*images):
    """Images as lists of (box, label) -> gt_boxes (N, G, 4), gt_labels (N, G), padded."""
    slots = max(len(im) for im in images)
    boxes = [[box for box, _ in im] + [PAD] * (slots - len(im)) for im in images]
    labels = [[lab for _, lab in im] + [-1] * (slots - len(im)) for im in images]
    return torch.tensor(boxes), torch.tensor(labels)


def test_candidates_thresholds_and_positives_by_hand():
    gt_boxes, gt_labels = batch([(GT_A, 2), (GT_B, 0), (PAD, -1)])
    cand = ATSSAssigner(topk=3).candidates(PRIORS, gt_boxes, gt_labels, LEVELS)
    assert cand.index[0, :2].tolist() == [[0, 1, 2, 4, 5, 6], [0, 1, 2, 4, 5, 6]]
    torch.testing.assert_close(cand.iou[0, 0], torch.tensor([1 / 2, 0, 1 / 11, 1 / 2, 0, 0]))
    torch.testing.assert_close(cand.iou[0, 1], torch.tensor([0.64, 16 / 148, 0, 100 / 256, 0, 0]))
    torch.testing.assert_close(cand.iou_threshold[0, :2], torch.tensor([0.430783, 0.457280]),
                               atol=2e-6, rtol=0)
    assert cand.positive[0, 0].tolist() == [True, False, False, False, False, False]  # P4: border
    assert cand.positive[0, 1].tolist() == [True, False, False, False, False, False]
    assert not cand.valid[0, 2].any() and not cand.positive[0, 2].any()  # the padding slot


def test_a_prior_positive_for_two_gts_goes_to_the_higher_iou():
    gt_boxes, gt_labels = batch([(GT_A, 2), (GT_B, 0)], [])
    result = ATSSAssigner(topk=3).assign(PRIORS, gt_boxes, gt_labels, num_level_priors=LEVELS)
    assert result.gt_index.tolist() == [[1, NEG, NEG, NEG, NEG, NEG, NEG, NEG],
                                        [NEG] * 8]  # image 2 has no GT: all negative
    assert result.labels.tolist() == [[0] + [-1] * 7, [-1] * 8]
    assert result.num_gts.tolist() == [2, 0]
    torch.testing.assert_close(result.max_iou[0], torch.tensor(
        [0.64, 16 / 148, 1 / 11, 0, 1 / 2, 0, 0, 0]))  # best IoU over both GTs
    alone = ATSSAssigner(topk=3).assign(PRIORS, *batch([(GT_A, 2)]), num_level_priors=LEVELS)
    assert alone.gt_index.tolist() == [[0] + [NEG] * 7]  # without B, A keeps P0


def test_an_invalid_prior_is_never_a_candidate_and_is_ignored():
    """P0 invalid: level 0's candidates become P1, P2, P3. A: IoUs (0, 1/11, 0, 1/2, 0, 0),
    threshold 0.298519, P4 passes but sits on A's border. B: IoUs (0.108108, 0, 0, 0.390625,
    0, 0), threshold 0.239850: P4 (centre (8, 8) inside B) is positive for B."""
    gt_boxes, gt_labels = batch([(GT_A, 2), (GT_B, 0)])
    valid = torch.tensor([[False] + [True] * 7])
    assigner = ATSSAssigner(topk=3)
    cand = assigner.candidates(PRIORS, gt_boxes, gt_labels, LEVELS, usable=valid)
    assert cand.index[0, 0].tolist() == [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close(cand.iou_threshold[0], torch.tensor([0.298519, 0.239850]),
                               atol=2e-6, rtol=0)
    result = assigner.assign(PRIORS, gt_boxes, gt_labels, prior_valid=valid,
                             num_level_priors=LEVELS)
    assert result.gt_index.tolist() == [[IGN, NEG, NEG, NEG, 1, NEG, NEG, NEG]]


def test_a_level_with_fewer_valid_priors_than_topk_uses_those_it_has():
    gt_boxes, gt_labels = batch([(GT_B, 0)])
    valid = torch.tensor([[True, False, False, False] + [True] * 4])  # level 0: P0 only
    cand = ATSSAssigner(topk=3).candidates(PRIORS, gt_boxes, gt_labels, LEVELS, usable=valid)
    assert cand.valid[0, 0].tolist() == [True, False, False, True, True, True]
    # the statistics see 4 IoUs: 0.64, 0.390625, 0, 0
    values = torch.tensor([0.64, 0.390625, 0.0, 0.0])
    torch.testing.assert_close(cand.iou_threshold[0, 0], values.mean() + values.std())


def test_ignore_regions_are_ignored_unless_positive():
    gt_boxes, gt_labels = batch([(GT_B, 0)])
    ignore = torch.tensor([[[-20.0, -20.0, 0.0, 0.0], [30.0, 30.0, 50.0, 50.0]]])  # P3 and P7
    assigner = ATSSAssigner(topk=3, ignore_iof_thr=0.5)
    result = assigner.assign(PRIORS, gt_boxes, gt_labels, ignore, torch.tensor([[True, False]]),
                             num_level_priors=LEVELS)
    assert result.gt_index.tolist() == [[0, NEG, NEG, IGN, NEG, NEG, NEG, NEG]]  # P7's box off
    off = ATSSAssigner(topk=3).assign(PRIORS, gt_boxes, gt_labels, ignore,
                                      num_level_priors=LEVELS)
    assert IGN not in off.gt_index.tolist()[0]  # ignore_iof_thr <= 0: ignore boxes unused


def test_batched_priors_per_image_give_the_same_result():
    gt_boxes, gt_labels = batch([(GT_A, 2), (GT_B, 0)], [(GT_B, 1)])
    assigner = ATSSAssigner(topk=3)
    shared = assigner.assign(PRIORS, gt_boxes, gt_labels, num_level_priors=LEVELS)
    per_image = assigner.assign(PRIORS.expand(2, -1, -1), gt_boxes, gt_labels,
                                num_level_priors=LEVELS)
    assert torch.equal(shared.gt_index, per_image.gt_index)
    assert shared.gt_index[1].tolist() == [0] + [NEG] * 7


def test_config_needs_level_counts_and_flags():
    assigner = ASSIGNERS.build(ATSSAssignerConfig())
    assert (assigner.topk, assigner.ignore_iof_thr) == (9, -1.0)
    assert assigner.needs_predictions is False and assigner.needs_num_level_priors is True
    gt_boxes, gt_labels = batch([(GT_A, 2)])
    with pytest.raises(DetError, match="needs num_level_priors"):
        assigner.assign(PRIORS, gt_boxes, gt_labels)
    with pytest.raises(DetError, match=r"num_level_priors \[4, 3\] add up to 7, but there are 8"):
        assigner.assign(PRIORS, gt_boxes, gt_labels, num_level_priors=[4, 3])
