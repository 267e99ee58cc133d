"""``detcli.analysis.roi_sampling`` and the two-stage side of ``det viz assign``'s library: the
jittered proposals, the RoI sampling against the sampler's rule and StandardRoIHead.sample,
the picture's size, the network input of --checkpoint, and the RPN's anchor assignment checked
against its generator and assigner run directly.

The image is tests/analysis/tiny_data.py's a.png (128 x 96), prepared by the synthetic preset's
test pipeline to a 256 x 192 input (scale 2, no padding needed); its GT boxes are given in
original pixels and land at twice their coordinates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from detcli.analysis.assign_view import pipeline_of
from detcli.analysis.proposals import (
    IOU_RANGE,
    background_boxes,
    jitter_boxes,
    jitter_proposals,
    network_input,
)
from detcli.analysis.roi_sampling import RCNNParts, sample_candidates, visualize_roi_sampling
from detcli.config.loader import load_config
from detcli.inference.preprocess import Preprocessor
from detcli.models.build import build_detector
from detcli.registry import ROI_HEADS
from detcli.structures.batch import DetTargets
from detcli.structures.proposals import Proposals
from detcli.task.assigners.max_iou import MaxIoUAssigner
from detcli.task.prior_generators.anchor_generator import AnchorGenerator
from detcli.task.samplers.random_sampler import RandomSampler
from detcli.viz.canvas import assignment_canvas_size
from detcli.viz.roi_picture import draw_roi_sampling
from tests.analysis.tiny_data import ROOT, assign_boxes, make_tiny

FRCNN = ROOT / "presets" / "faster_rcnn_tiny_synth.toml"
SMALL = ("[model.backbone]\nbase_channels = 8\n[model.neck]\nout_channels = 32\n"
         "[model.rpn_head]\nfeat_channels = 32\n[model.roi_head.bbox_head]\nfc_out_channels = 64\n")
SHAPE = (192, 256)  # (h, w) of the network input
GT = torch.tensor([[20., 20., 60., 60.], [160., 100., 220., 180.]])  # far apart: no jitter overlaps
LABELS = torch.tensor([0, 2])


def two_stage_config(tiny, folder):
    """The tiny Faster R-CNN (ResNet-18 at width 8, 32-channel FPN) on the tiny data."""
    splits = "".join(f'[data.{s}]\nann_file = "{tiny.ann_file}"\nimg_prefix = "{tiny.root / "images"}/"\n'
                     for s in ("train", "val", "test"))
    config = folder / "frcnn.toml"
    config.write_text(f'extends = ["{FRCNN}"]\n{SMALL}{splits}')
    return config


@pytest.fixture(scope="module")
def frcnn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("frcnn")
    tiny = make_tiny(folder)
    return tiny, two_stage_config(tiny, folder)


def own_iou(boxes, gt):
    """IoU of each (G, J, 4) box with its own GT (G, 4), by torchvision: (G, J)."""
    return torch.stack([torchvision.ops.box_iou(boxes[g], gt[g:g + 1])[:, 0] for g in range(len(gt))])


# -- jittered proposals -----------------------------------------------------------------------

def test_jitter_ious_spread_one_per_stratum_and_reach_their_targets():
    per_gt = 16
    boxes, target = jitter_boxes(GT, SHAPE, per_gt, torch.Generator().manual_seed(3))
    assert boxes.shape == (2, per_gt, 4) and target.shape == (2, per_gt)
    iou = own_iou(boxes, GT)  # (2, 16)
    assert (iou >= target - 1e-6).all() and (iou - target).abs().max() < 1e-4
    lo, hi = IOU_RANGE
    width = (hi - lo) / per_gt
    for g in range(2):  # stratum j holds the j-th target: the IoUs cover 0.1 .. 0.95 evenly
        strata = torch.floor((target[g] - lo) / width).long()
        assert strata.tolist() == list(range(per_gt))
        assert iou[g].min() < lo + width and iou[g].max() >= hi - width
    assert (boxes[..., 0] >= 0).all() and (boxes[..., 2] <= SHAPE[1]).all()  # inside the image
    assert (boxes[..., 1] >= 0).all() and (boxes[..., 3] <= SHAPE[0]).all()
    assert (boxes[..., 2:] > boxes[..., :2]).all()


def test_jitter_is_deterministic_for_a_seed_and_clipped_near_the_border():
    a, _ = jitter_proposals(GT, SHAPE, 8, 10, torch.Generator().manual_seed(5))
    b, source = jitter_proposals(GT, SHAPE, 8, 10, torch.Generator().manual_seed(5))
    c, _ = jitter_proposals(GT, SHAPE, 8, 10, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (2 * 8 + 10, 4)
    assert source.tolist() == [0] * 8 + [1] * 8 + [-1] * 10
    corner = torch.tensor([[0., 0., 30., 20.]])  # at the image corner: boxes are clipped
    boxes, target = jitter_boxes(corner, SHAPE, 12, torch.Generator().manual_seed(0))
    assert boxes.min() >= 0
    assert (own_iou(boxes, corner) - target).abs().max() < 1e-4
    back = background_boxes(SHAPE, 200, torch.Generator().manual_seed(0))  # (200, 4)
    sides = back[:, 2:] - back[:, :2]
    assert back.min() >= 0 and (back[:, [0, 2]] <= 256).all() and (back[:, [1, 3]] <= 192).all()
    assert sides.max() <= 96 + 1e-4 and (sides > 0).all()  # at most half the shorter side


# -- sampling ---------------------------------------------------------------------------------

def rcnn_parts(num, pos_fraction=0.25):
    return RCNNParts(MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                    match_low_quality=False),
                     RandomSampler(num=num, pos_fraction=pos_fraction, add_gt_as_proposals=True),
                     None, None)


def hand_proposals():
    """17 jittered boxes per GT, no background: targets (0.1 + 0.85 (j + u) / 17) reach 0.5
    exactly at j = 8, so strata 8..16 give 9 boxes of IoU >= 0.5 per GT and 8 below."""
    boxes, _ = jitter_boxes(GT, SHAPE, 17, torch.Generator().manual_seed(1))  # (2, 17, 4)
    iou = torchvision.ops.box_iou(boxes.reshape(-1, 4), GT)  # (34, 2)
    assert ((iou >= 0.5).sum(dim=0)).tolist() == [9, 9]  # by hand, checked independently
    assert (iou[:17, 1] == 0).all() and (iou[17:, 0] == 0).all()  # each box meets its GT only
    return boxes.reshape(-1, 4)


def test_sampled_counts_follow_the_sampler_rule_with_the_gt_boxes_added():
    proposals = hand_proposals()  # 18 positives, 16 negatives; + 2 GT boxes: 20 positives
    small = sample_candidates(rcnn_parts(16), proposals, GT, LABELS,
                              generator=torch.Generator().manual_seed(0))
    assert len(small.boxes) == 36 and small.gt_flags[:2].all() and not small.gt_flags[2:].any()
    assert torch.equal(small.boxes[:2], GT)
    assert int((small.gt_index >= 0).sum()) == 20 and int((small.gt_index == -1).sum()) == 16
    assert int(small.sampled_pos.sum()) == 4  # int(16 * 0.25)
    assert int(small.sampled_neg.sum()) == 12  # 16 - 4
    assert not (small.sampled_pos & small.sampled_neg).any()

    every = sample_candidates(rcnn_parts(512), proposals, GT, LABELS,
                              generator=torch.Generator().manual_seed(0))
    assert int(every.sampled_pos.sum()) == 20 and int(every.sampled_neg.sum()) == 16
    assert every.sampled_pos[:2].all()  # the GT boxes themselves are positives
    assert every.gt_index[:2].tolist() == [0, 1]
    matched = every.gt_index[2:]  # the jittered boxes: the first 17 around GT 0
    assert set(matched[:17][matched[:17] >= 0].tolist()) == {0}
    assert set(matched[17:][matched[17:] >= 0].tolist()) == {1}


def test_sampling_draws_what_standard_roi_head_sample_draws(frcnn):
    _, config = frcnn
    cfg = load_config(config, ["model.train_cfg.rcnn.sampler.num=16"]).cfg
    head = ROI_HEADS.build(cfg.model.roi_head, train_cfg=cfg.model.train_cfg.rcnn)
    proposals = hand_proposals()
    mine = sample_candidates(RCNNParts.from_config(cfg), proposals, GT, LABELS,
                             generator=torch.Generator().manual_seed(7))
    batch = Proposals(proposals[None], torch.ones(1, 34), torch.ones(1, 34, dtype=torch.bool))
    theirs = head.sample(batch, DetTargets.from_lists([GT], [LABELS]),
                         generator=torch.Generator().manual_seed(7))
    valid = theirs.valid[0]
    expected = torch.cat([mine.boxes[mine.sampled_pos], mine.boxes[mine.sampled_neg]])
    assert torch.equal(theirs.rois[0][valid], expected)  # positives then negatives, in order
    assert int(theirs.pos[0].sum()) == int(mine.sampled_pos.sum()) == 4


# -- the view and its picture -----------------------------------------------------------------

def test_view_counts_and_picture_size(frcnn):
    tiny, config = frcnn
    cfg = load_config(config).cfg
    view = assign_boxes(cfg, tiny.image_a, ["10,20,40,50", "60,10,100,80,circle"])
    rcnn = visualize_roi_sampling(cfg, view, pipeline_of(cfg, False), jitter=10, background=30,
                                  seed=2)
    c = rcnn.counts
    assert c["proposals"] == 2 * 10 + 30 and c["candidates"] == 52 and c["gt_added"] == 2
    assert (c["sampler_num"], c["pos_fraction"], c["max_positive"]) == (256, 0.25, 64)
    # 52 candidates < 256: every positive (at most 64) and every negative is sampled
    assert c["sampled_positive"] == c["assigned_positive"] == sum(g.num_proposals for g in rcnn.gts) + 2
    assert c["sampled_negative"] == c["assigned_negative"] == 52 - c["assigned_positive"]
    assert [g.gt_sampled for g in rcnn.gts] == [True, True]
    iou = torchvision.ops.box_iou(torch.from_numpy(view.gt_boxes),
                                  torch.from_numpy(rcnn.proposals))  # (2, 50)
    assert [g.best_iou for g in rcnn.gts] == pytest.approx(iou.max(dim=1).values.tolist(), abs=1e-6)
    assert rcnn.to_dict()["proposals"]["jitter_per_gt"] == 10
    again = visualize_roi_sampling(cfg, view, pipeline_of(cfg, False), jitter=10, background=30, seed=2)
    np.testing.assert_array_equal(again.proposals, rcnn.proposals)  # --seed decides

    # 2 panels of 256 x 192: 524 wide, 18 + 192 + 4 + 4 high; legend: 3 markers, 2 totals and
    # 2 GTs = 7 entries, 2 per line (520 // 200): 4 lines of 18, + 4
    assert draw_roi_sampling(rcnn).shape == (218 + 72 + 4, 524, 3)
    assert assignment_canvas_size(SHAPE, 2, 7) == (294, 524)
    # with the faint unsampled marker: 8 entries, still 4 lines
    assert draw_roi_sampling(rcnn, show_unsampled=True).shape == (294, 524, 3)


def test_network_input_matches_the_test_preprocessing(frcnn):
    tiny, config = frcnn
    cfg = load_config(config).cfg
    view = assign_boxes(cfg, tiny.image_a, ["10,20,40,50"])
    batch = network_input(view, pipeline_of(cfg, False))
    reference = Preprocessor.from_config(cfg)([tiny.image_a])  # det predict's input, independently
    assert batch.tensor.shape == reference.tensor.shape == (1, 3, 192, 256)
    # the picture's 8-bit pixels round the input by at most half a grey level: 0.5 / 57.12
    assert (batch.tensor - reference.tensor).abs().max() <= 0.5 / 57.12 + 1e-5
    assert torch.equal(batch.img_shapes, reference.img_shapes)
    assert batch.ori_shapes == reference.ori_shapes
    torch.testing.assert_close(batch.scale_factors, reference.scale_factors)


# -- the RPN's anchors ------------------------------------------------------------------------

def test_rpn_per_level_counts_match_its_generator_and_assigner_run_directly(frcnn):
    tiny, config = frcnn
    cfg = load_config(config).cfg
    view = assign_boxes(cfg, tiny.image_a, ["10,20,40,50", "60,10,100,80,circle"],
                                seed=4)
    assert view.head_key == "model.rpn_head" and view.to_dict()["anchors_of"] == "model.rpn_head"
    assert (view.assigner, view.sampler) == ("MaxIoUAssigner", "RandomSampler")

    model = build_detector(cfg.model).eval()  # the RPN's own feature maps for this input
    with torch.no_grad():
        logits = model(torch.zeros(1, 3, *SHAPE)).rpn.cls_logits
    sizes = [tuple(t.shape[-2:]) for t in logits]
    assert sizes == [(48, 64), (24, 32), (12, 16), (6, 8), (3, 4)]

    generator = AnchorGenerator(strides=[4, 8, 16, 32, 64], ratios=[0.5, 1.0, 2.0], scales=[4])
    per_level = generator.grid_priors(sizes)
    priors = torch.cat(per_level)  # (R, 4)
    level = torch.cat([torch.full((len(p),), k) for k, p in enumerate(per_level)])
    gt = torch.tensor([[20., 40., 80., 100.], [120., 20., 200., 160.]])
    assign = MaxIoUAssigner(pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3).assign(
        priors, gt[None], torch.zeros(1, 2, dtype=torch.long))  # every GT one class: "object"
    sampled = RandomSampler(num=256, pos_fraction=0.5, add_gt_as_proposals=False).sample(
        assign, priors, gt[None], torch.zeros(1, 2, dtype=torch.long),
        generator=torch.Generator().manual_seed(4))
    np.testing.assert_array_equal(view.priors, priors.numpy())
    np.testing.assert_array_equal(view.gt_index, assign.gt_index[0].numpy())
    rows = view.per_level()
    for k in range(5):
        on = level == k
        assert rows[k]["priors"] == int(on.sum())
        assert rows[k]["positive"] == int((on & (assign.gt_index[0] >= 0)).sum())
        assert rows[k]["ignored"] == int((on & (assign.gt_index[0] == -2)).sum())
        assert rows[k]["negative"] == int((on & sampled.neg_mask[0]).sum())
    assert view.counts["negative"] == int(sampled.neg_mask.sum()) == 256 - int(sampled.pos_mask.sum())
    assert [g.num_pos for g in view.gts] == [int((assign.gt_index[0] == g).sum()) for g in range(2)]
