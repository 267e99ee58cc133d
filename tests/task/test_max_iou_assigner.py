"""MaxIoUAssigner on priors and GT boxes whose IoUs are easy numbers.

All boxes but the far ones share x in [0, 10] (or [100, 110]), so IoU is a ratio of heights:

    GT0 = [0, 0, 10, 10]       GT1 = [100, 0, 110, 10]
    P0 = [0, 0, 10, 10]    IoU with GT0 = 1.0
    P1 = [0, 0, 10, 5]     0.5   (exactly the positive threshold: positive)
    P2 = [0, 0, 10, 4.5]   0.45  (between 0.4 and 0.5: IGNORED)
    P3 = [0, 0, 10, 2]     0.2   (negative)
    P4 = [50, 50, 60, 60]  0.0   (negative)
    P5 = [100, 0, 110, 3]  0.3 with GT1 (GT1's best, tied with P6)
    P6 = [100, 7, 110, 10] 0.3 with GT1
    P7 = [100, 0, 110, 2]  0.2 with GT1
"""

import pytest
import torch
from pydantic import ValidationError

from detcli.registry import ASSIGNERS
from detcli.task.assigners import IGNORED, NEGATIVE, MaxIoUAssigner, MaxIoUAssignerConfig

POS, NEG, IGN = "pos", NEGATIVE, IGNORED
PRIORS = torch.tensor([
    [0., 0., 10., 10.], [0., 0., 10., 5.], [0., 0., 10., 4.5], [0., 0., 10., 2.],
    [50., 50., 60., 60.], [100., 0., 110., 3.], [100., 7., 110., 10.], [100., 0., 110., 2.],
])
GT = torch.tensor([[[0., 0., 10., 10.], [100., 0., 110., 10.]]])  # (1, 2, 4)
LABELS = torch.tensor([[3, 7]])  # (1, 2)


def retina(**kwargs) -> MaxIoUAssigner:
    """RetinaNet's settings, with overrides."""
    return MaxIoUAssigner(**{"pos_iou_thr": 0.5, "neg_iou_thr": 0.4, "min_pos_iou": 0.0, **kwargs})


def test_positive_negative_ignored_and_low_quality_ties():
    result = retina().assign(PRIORS, GT, LABELS)
    # P5 and P6 tie as GT1's best (0.3): gt_max_assign_all gives GT1 both
    assert result.gt_index.tolist() == [[0, 0, IGN, NEG, NEG, 1, 1, NEG]]
    assert result.labels.tolist() == [[3, 3, -1, -1, -1, 7, 7, -1]]
    assert result.max_iou[0].tolist() == pytest.approx([1.0, 0.5, 0.45, 0.2, 0.0, 0.3, 0.3, 0.2])
    assert result.num_gts.tolist() == [2]
    assert result.pos_mask.sum().item() == 4 and result.neg_mask.sum().item() == 3


def test_gt_max_assign_all_false_takes_first_best_prior():
    result = retina(gt_max_assign_all=False).assign(PRIORS, GT, LABELS)
    assert result.gt_index.tolist() == [[0, 0, IGN, NEG, NEG, 1, NEG, NEG]]


def test_min_pos_iou_and_no_low_quality():
    result = retina(min_pos_iou=0.35).assign(PRIORS, GT, LABELS)  # GT1's best 0.3 < 0.35
    assert result.gt_index.tolist() == [[0, 0, IGN, NEG, NEG, NEG, NEG, NEG]]
    result = retina(match_low_quality=False).assign(PRIORS, GT, LABELS)
    assert result.gt_index.tolist() == [[0, 0, IGN, NEG, NEG, NEG, NEG, NEG]]


def test_neg_interval():
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.4), match_low_quality=False)
    result = assigner.assign(PRIORS, GT, LABELS)
    # P4 (IoU 0) is below the interval [0.1, 0.4): neither negative nor positive
    assert result.gt_index.tolist() == [[0, 0, IGN, NEG, IGN, NEG, NEG, NEG]]


def test_low_quality_last_gt_wins_and_overrides_step_3():
    priors = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 1.]])
    gt = torch.tensor([[[0., 0., 10., 10.], [0., 0., 10., 10.]]])  # two identical GTs
    result = retina().assign(priors, gt, torch.tensor([[1, 2]]))
    # step 3 picks slot 0 (first max), step 4 lets slot 1 claim it (MMDetection's loop order)
    assert result.gt_index.tolist() == [[1, NEG]]
    assert result.labels.tolist() == [[2, -1]]


def test_gt_without_overlap_claims_zero_iou_priors_as_mmdetection():
    far_gt = torch.tensor([[[200., 200., 210., 210.]]])
    result = retina().assign(PRIORS[:2], far_gt, torch.tensor([[0]]))
    assert result.gt_index.tolist() == [[0, 0]]  # best IoU 0 >= min_pos_iou 0
    result = retina(min_pos_iou=0.01).assign(PRIORS[:2], far_gt, torch.tensor([[0]]))
    assert result.gt_index.tolist() == [[NEG, NEG]]


def test_ignore_boxes_by_iof():
    ignore = torch.tensor([[[45., 45., 65., 65.], [0., 0., 10., 10.]]])  # covers P4; slot 1 off
    ignore_valid = torch.tensor([[True, False]])
    wrt_prior = retina(ignore_iof_thr=0.5)
    result = wrt_prior.assign(PRIORS, GT, LABELS, ignore, ignore_valid)
    # P4 lies inside the region: IoF over its own area = 1 > 0.5. Slot 1 would cover P0-P3.
    assert result.gt_index.tolist() == [[0, 0, IGN, NEG, IGN, 1, 1, NEG]]
    wrt_region = retina(ignore_iof_thr=0.5, ignore_wrt_candidates=False)
    result = wrt_region.assign(PRIORS, GT, LABELS, ignore, ignore_valid)
    assert result.gt_index[0, 4].item() == NEG  # 100 / 400 = 0.25 of the region's area
    result = retina(ignore_iof_thr=-1).assign(PRIORS, GT, LABELS, ignore, ignore_valid)
    assert result.gt_index[0, 4].item() == NEG  # switched off


def test_ignored_prior_cannot_be_claimed():
    priors = torch.tensor([[50., 50., 60., 60.], [50., 50., 60., 55.], [55., 50., 65., 60.]])
    gt = torch.tensor([[[50., 50., 60., 60.]]])
    ignore = torch.tensor([[[50., 50., 60., 60.]]])
    result = retina(ignore_iof_thr=0.5).assign(priors, gt, torch.tensor([[0]]), ignore)
    # IoU 1 and 0.5, but IoF 1 > 0.5: ignored. The third prior has IoF 0.5 (not above the
    # threshold) and IoU 50 / 150 = 0.333 < 0.4, yet the GT claims it as its best usable prior.
    assert result.gt_index.tolist() == [[IGN, IGN, 0]]


def test_padding_slots_never_match():
    # slot 0 is padding with a box equal to P3; slot 2 is zero-box padding (IoU 0 everywhere,
    # which a real GT would claim every zero-IoU prior with)
    gt = torch.tensor([[[0., 0., 10., 2.], [0., 0., 10., 10.], [0., 0., 0., 0.]]])
    labels = torch.tensor([[-1, 3, -1]])
    result = retina().assign(PRIORS, gt, labels)
    assert result.gt_index.tolist() == [[1, 1, IGN, NEG, NEG, NEG, NEG, NEG]]
    assert result.max_iou[0, 3].item() == pytest.approx(0.2)  # not 1.0 from the padding box
    assert result.num_gts.tolist() == [1]
    with pytest.raises(ValidationError, match="min_pos_iou"):  # the config's check, once
        MaxIoUAssignerConfig(min_pos_iou=-1.0)


def test_batch_with_an_image_without_gt_equals_per_image():
    gt = torch.cat([GT, torch.zeros(1, 2, 4)])  # image 1: padding only
    labels = torch.tensor([[3, 7], [-1, -1]])
    result = retina().assign(PRIORS, gt, labels)
    assert result.gt_index[1].tolist() == [NEG] * 8
    assert result.labels[1].tolist() == [-1] * 8
    assert result.max_iou[1].tolist() == [0.0] * 8
    assert result.num_gts.tolist() == [2, 0]
    alone = retina().assign(PRIORS, GT, LABELS)
    assert torch.equal(result.gt_index[:1], alone.gt_index)
    per_image_priors = torch.stack([PRIORS, PRIORS + 1.0])  # (2, R, 4) form
    result = retina().assign(per_image_priors, gt, labels)
    assert torch.equal(result.gt_index[:1], alone.gt_index)
    empty = retina().assign(PRIORS, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert empty.gt_index.tolist() == [[NEG] * 8] * 2


def test_invalid_priors_take_no_part():
    valid = torch.tensor([False, True, True, True, True, True, True, True])
    result = retina().assign(PRIORS, GT, LABELS, prior_valid=valid)
    # P0 is invalid; GT0's best valid prior is P1 (0.5), which is positive anyway
    assert result.gt_index.tolist() == [[IGN, 0, IGN, NEG, NEG, 1, 1, NEG]]
    valid = torch.tensor([False, False, True, True, True, True, True, True])
    result = retina().assign(PRIORS, GT, LABELS, prior_valid=valid)
    assert result.gt_index.tolist() == [[IGN, IGN, 0, NEG, NEG, 1, 1, NEG]]  # P2 claimed (0.45)
    nothing = retina().assign(PRIORS, torch.zeros(1, 1, 4), torch.tensor([[-1]]), prior_valid=valid)
    assert nothing.gt_index.tolist() == [[IGN, IGN] + [NEG] * 6]


def test_half_precision_priors():
    result = retina().assign(PRIORS.half(), GT.half(), LABELS)
    assert result.gt_index.tolist() == [[0, 0, IGN, NEG, NEG, 1, 1, NEG]]
    assert result.max_iou.dtype == torch.float32


def test_config_build_and_validation():
    cfg = MaxIoUAssignerConfig(neg_iou_thr=[0.1, 0.4])
    assigner = ASSIGNERS.build(cfg)
    assert isinstance(assigner, MaxIoUAssigner) and (assigner.neg_lo, assigner.neg_hi) == (0.1, 0.4)
    with pytest.raises(ValidationError, match="above pos_iou_thr"):
        MaxIoUAssignerConfig(pos_iou_thr=0.3)
    with pytest.raises(ValidationError, match="lo must be <= hi"):
        MaxIoUAssignerConfig(neg_iou_thr=[0.4, 0.1])
    with pytest.raises(ValidationError):
        MaxIoUAssignerConfig(pos_iou_thr=1.5)
    with pytest.raises(ValidationError):
        MaxIoUAssignerConfig(gpu_assign_thr=10)  # not a setting here
