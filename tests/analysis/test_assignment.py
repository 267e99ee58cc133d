"""detcli.analysis.assignment: feature-map sizes against a real model, and a hand-computed
assignment of six priors.

One level, stride 16, one 16 x 16 anchor per location (ratio 1, scale 1, centred on the cell's
top-left corner), padded input 32 x 48: a 2 x 3 grid, priors in row-major order

    P0 [-8, -8, 8, 8]   P1 [8, -8, 24, 8]   P2 [24, -8, 40, 8]
    P3 [-8, 8, 8, 24]   P4 [8, 8, 24, 24]   P5 [24, 8, 40, 24]

Image A: GT0 [8, 8, 24, 24] = P4 (IoU 1); GT1 [26, 0, 40, 12]: with P2 112 / 312 = 0.358974,
with P5 56 / 368 = 0.152174; GT2 [0, 10, 8, 22]: with P3 96 / 256 = 0.375.
Image B: GT1 again, and GT3 [26, 2, 38, 10]: with P2 72 / 280 = 0.257143, P5 24 / 328.
Assigner: pos_iou_thr 0.5, neg_iou_thr 0.15, min_pos_iou 0 (low-quality matches on).
"""

from __future__ import annotations

import pytest
import torch

from detcli.analysis.assignment import AssignmentParts, assign_batch, assign_image, featmap_sizes
from detcli.analysis.capabilities import makes_proposals
from detcli.config.loader import load_config
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.task.assigners import IGNORED, NEGATIVE, MaxIoUAssigner
from detcli.task.prior_generators import AnchorGenerator
from detcli.task.samplers import PseudoSampler, RandomSampler
from tests.analysis.fake_heads import ROOT, point_head, point_head_config  # noqa: F401  (fixture)

NEG, IGN = NEGATIVE, IGNORED
GT_A = torch.tensor([[8., 8., 24., 24.], [26., 0., 40., 12.], [0., 10., 8., 22.]])
LABELS_A = torch.tensor([2, 0, 1])
GT_B = torch.tensor([[26., 0., 40., 12.], [26., 2., 38., 10.]])
LABELS_B = torch.tensor([0, 2])
PAD = (32, 48)


def parts(sampler=None, allowed_border: int = -1) -> AssignmentParts:
    generator = AnchorGenerator(strides=[16], ratios=[1.0], scales=[1.0])
    return AssignmentParts(
        prior_generator=generator,
        assigner=MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.15, min_pos_iou=0.0),
        sampler=sampler or PseudoSampler(), num_levels=1, strides=generator.strides,
        allowed_border=allowed_border)


def test_featmap_sizes_by_hand():
    strides = [8, 16, 32, 64, 128]
    assert featmap_sizes((256, 224), strides) == [(32, 28), (16, 14), (8, 7), (4, 4), (2, 2)]
    assert featmap_sizes((100, 70), strides) == [(13, 9), (7, 5), (4, 3), (2, 2), (1, 1)]
    assert featmap_sizes((100, 70), [(8, 4), (16, 8)]) == [(25, 9), (13, 5)]  # (s_w, s_h)
    assert featmap_sizes((100, 70), [8, 24]) == [(13, 9), (5, 3)]  # not doubled: ceil(H / s)


@pytest.mark.parametrize("shape", [(64, 96), (100, 70), (33, 130)])
def test_featmap_sizes_match_a_real_retinanet(shape):
    model = build_detector({
        "type": "RetinaNet",
        "backbone": {"type": "ResNet", "depth": 18, "base_channels": 4, "init_cfg": False},
        "neck": {"type": "FPN", "out_channels": 8, "start_level": 1,
                 "add_extra_convs": "on_input", "num_outs": 5},
        "bbox_head": {"type": "RetinaHead", "num_classes": 2, "feat_channels": 8, "stacked_convs": 1},
    }).eval()
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, *shape))
    real = [tuple(x.shape[-2:]) for x in outputs.cls_logits]
    assert featmap_sizes(shape, model.bbox_head.prior_generator.strides) == real


def test_one_image_by_hand():
    a = assign_image(parts(), GT_A, LABELS_A, PAD)
    assert a.gt_index.tolist() == [NEG, NEG, 1, 2, 0, IGN]
    assert a.level.tolist() == [0] * 6
    assert a.priors[5].tolist() == [24., 8., 40., 24.]
    assert a.best_iou.tolist() == pytest.approx([1.0, 0.358974, 0.375], abs=1e-6)
    assert a.best_level.tolist() == [0, 0, 0]
    assert a.num_pos.tolist() == [1, 1, 1]
    assert a.num_pos_per_level.tolist() == [[1], [1], [1]]
    assert a.low_quality_only.tolist() == [False, True, True]
    assert a.num_ignored == 1
    assert a.max_iou[5].item() == pytest.approx(0.152174, abs=1e-6)
    assert a.assigned_iou.tolist() == pytest.approx([0, 0, 0.358974, 0.375, 1.0, 0], abs=1e-6)
    assert a.sampled_pos.tolist() == [False, False, True, True, True, False]  # PseudoSampler
    assert a.sampled_neg.tolist() == [True, True, False, False, False, False]
    assert a.pad_shape == PAD


def test_shared_best_prior_leaves_a_gt_without_positives():
    b = assign_image(parts(), GT_B, LABELS_B, PAD)
    # both claim P2 (their best); the higher slot wins, so GT1 ends with nothing
    assert b.gt_index.tolist() == [NEG, NEG, 1, NEG, NEG, IGN]
    assert b.num_pos.tolist() == [0, 1]
    assert b.best_iou.tolist() == pytest.approx([0.358974, 0.257143], abs=1e-6)
    assert b.low_quality_only.tolist() == [False, True]  # no positives is not "low quality only"


def test_batch_equals_one_image_at_a_time():
    batch = assign_batch(parts(), [GT_A, GT_B], [LABELS_A, LABELS_B], PAD)
    for got, (gt, labels) in zip(batch, [(GT_A, LABELS_A), (GT_B, LABELS_B)]):
        alone = assign_image(parts(), gt, labels, PAD)
        assert got.gt_boxes.shape == gt.shape  # padding slots dropped
        for name in ("gt_index", "best_iou", "best_level", "num_pos", "num_pos_per_level",
                     "low_quality_only", "assigned_iou", "sampled_pos"):
            assert torch.equal(getattr(got, name), getattr(alone, name)), name
        assert got.num_ignored == alone.num_ignored
    empty, _ = assign_batch(parts(), [torch.zeros(0, 4), GT_A], [torch.zeros(0).long(), LABELS_A], PAD)
    assert empty.gt_index.tolist() == [NEG] * 6 and empty.best_iou.shape == (0,)


def test_allowed_border_makes_outside_priors_ineligible():
    # allowed_border 0 in a 32 x 48 image: only P4 and P5 lie inside
    a = assign_image(parts(allowed_border=0), GT_A[:1], LABELS_A[:1], PAD, img_shape=PAD)
    assert a.gt_index.tolist() == [IGN, IGN, IGN, IGN, 0, NEG]
    assert a.num_ignored == 4
    b = assign_image(parts(allowed_border=0), GT_A[1:2], LABELS_A[1:2], PAD, img_shape=PAD)
    assert b.best_iou.tolist() == pytest.approx([0.152174], abs=1e-6)  # P2 is out of reach
    assert b.gt_index.tolist() == [IGN, IGN, IGN, IGN, NEG, 0]


def test_a_sampler_that_prepends_gt_still_indexes_the_real_priors():
    sampler = RandomSampler(num=4, pos_fraction=0.5, add_gt_as_proposals=True)
    a = assign_image(parts(sampler), GT_A, LABELS_A, PAD, generator=torch.Generator().manual_seed(0))
    assert a.sampled_pos.shape == a.sampled_neg.shape == (6,)
    assert not (a.sampled_pos & (a.gt_index < 0)).any()
    assert not (a.sampled_neg & (a.gt_index != NEG)).any()


def test_parts_from_the_tiny_preset_use_the_heads_sampler():
    cfg = load_config(ROOT / "presets" / "retinanet_tiny_synth.toml", [
        'model.train_cfg.sampler={type = "RandomSampler", num = 256, add_gt_as_proposals = false}']).cfg
    p = AssignmentParts.from_config(cfg)
    assert p.strides == [(8, 8), (16, 16), (32, 32), (64, 64), (128, 128)]
    assert (p.num_levels, p.pos_iou_thr, p.allowed_border) == (5, 0.5, -1)
    assert isinstance(p.sampler, PseudoSampler)  # focal loss keeps every prior, as the head does
    priors, level = p.priors((64, 64))
    assert priors.shape == (9 * (64 + 16 + 4 + 1 + 1), 4)
    assert level.tolist()[:576] == [0] * 576 and level[-9:].tolist() == [4] * 9


def test_anchor_free_head_is_a_clear_config_error(point_head, tmp_path):
    cfg = load_config(point_head_config(tmp_path)).cfg  # the config itself is valid
    with pytest.raises(ConfigError, match=r"model.bbox_head \(PointHead\) has no anchor_generator: "
                                          "anchor analysis does not apply") as info:
        AssignmentParts.from_config(cfg)
    assert "RetinaHead" in info.value.hint


def test_atss_with_a_sampling_loss_keeps_every_prior_as_its_head_does():
    """ATSS with a cross-entropy loss and a RandomSampler configured: the tool used to sample
    (it judged by the loss), the head keeps every prior. The tool now asks the head."""
    cfg = load_config(ROOT / "presets" / "atss_tiny_synth.toml", [
        'model.bbox_head.loss_cls={type = "CrossEntropyLoss", use_sigmoid = true}',
        'model.train_cfg.sampler={type = "RandomSampler", num = 8, pos_fraction = 0.5, '
        'add_gt_as_proposals = false}']).cfg
    p = AssignmentParts.from_config(cfg)
    assert p.head.training_rule().sampler == "PseudoSampler"
    assert isinstance(p.sampler, PseudoSampler) and p.sampler_cfg.type == "PseudoSampler"
    gt = torch.tensor([[8., 8., 40., 40.], [20., 4., 60., 30.]])
    a = assign_image(p, gt, torch.tensor([0, 1]), (64, 64),
                     generator=torch.Generator().manual_seed(0))
    assert int(a.num_pos.sum()) > 0
    # every assigned prior takes part: positives are the assigned ones, negatives all the rest
    assert torch.equal(a.sampled_pos, a.gt_index >= 0)
    assert torch.equal(a.sampled_neg, a.gt_index == NEG)
    assert int(a.sampled_neg.sum()) > 8  # more than the configured sampler's whole budget


def test_only_a_two_stage_detector_makes_proposals():
    built = {name: build_detector(load_config(ROOT / "presets" / f"{name}.toml").cfg.model)
             for name in ("retinanet_tiny_synth", "faster_rcnn_tiny_synth")}
    assert not makes_proposals(built["retinanet_tiny_synth"])
    assert makes_proposals(built["faster_rcnn_tiny_synth"])
