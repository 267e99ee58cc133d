"""The Cascade R-CNN side of ``det viz assign``'s RoI sampling: the stand-in refinement's boxes,
the training slot layout, each stage's positives for proposals of known IoU, the replay
against CascadeRoIHead.stage_samples (the training code) with a model's own regression, what
each stage's picture says, and a Cascade Mask R-CNN's mask targets per stage.

The hand-checked proposals are the GT box (0, 0, 100, 100) shifted right by d pixels: IoU
(100 - d) / (100 + d), so d = 5, 10, 20, 30, 40 give 0.905, 0.818, 0.667, 0.538, 0.429.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.analysis import capabilities as can
from detcli.analysis.assign_view import annotation_gt, pipeline_of, visualize_assignment
from detcli.analysis.proposals import CheckpointRun
from detcli.analysis.refinement import ModelRefiner, TowardGT, toward_gt
from detcli.analysis.roi_sampling import (
    CandidateSampling,
    RCNNParts,
    RoISamplingView,
    sample_stages,
    training_slots,
    visualize_roi_sampling,
    visualize_roi_stages,
)
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.models.build import build_detector
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.proposals import Proposals
from detcli.viz.roi_picture import draw_roi_sampling, rcnn_legend_entries, rcnn_panel_title
from tests.analysis.tiny_data import ROOT, assign_boxes, make_tiny

CASCADE = ROOT / "presets" / "cascade_rcnn_tiny_synth.toml"
GT = torch.tensor([[0., 0., 100., 100.]])
LABELS = torch.tensor([1])
SHIFTS = torch.tensor([5., 10., 20., 30., 40.])


def shifted(shifts):
    """The GT moved right by each shift: (len(shifts), 4)."""
    return GT.repeat(len(shifts), 1) + torch.stack(
        [shifts, torch.zeros_like(shifts), shifts, torch.zeros_like(shifts)], dim=1)


def iou_of_shift(d):
    return (100 - float(d)) / (100 + float(d))


def cascade_parts(overrides=()):
    return RCNNParts.stages_from_config(load_config(CASCADE, list(overrides)).cfg)


class StayPut:
    """A refiner that leaves every RoI where it is: the later stages' thresholds on the
    unrefined boxes."""

    def refine(self, stage, rois, labels, gt_index):
        return rois.clone()

    def to_dict(self):
        return {"source": "none"}

    def legend(self, stage):
        return "unrefined"


def test_toward_gt_moves_positives_by_the_fraction_and_leaves_the_rest():
    rois = torch.tensor([[0., 0., 10., 10.], [20., 20., 30., 30.], [90., 90., 100., 100.],
                         [0., 0., 0., 0.]])
    gt = torch.tensor([[2., 2., 12., 12.], [96., 96., 110., 110.]])
    gt_index = torch.tensor([0, -1, 1, -1])  # a negative and a padding slot stay put
    moved = toward_gt(rois, gt, gt_index, 0.5, (100, 100))
    # half way corner by corner: (0 + 2) / 2 = 1, (10 + 12) / 2 = 11; (90 + 96) / 2 = 93,
    # (100 + 110) / 2 = 105, clipped to the 100 x 100 image
    assert moved.tolist() == [[1., 1., 11., 11.], [20., 20., 30., 30.], [93., 93., 100., 100.],
                              [0., 0., 0., 0.]]
    assert toward_gt(rois, gt, gt_index, 1.0, (200, 200))[0].tolist() == [2., 2., 12., 12.]


def test_training_slots_are_positives_then_negatives_then_padding():
    pos = torch.tensor([False, True, False, True, False])
    neg = torch.tensor([True, False, False, False, True])
    sampling = CandidateSampling(torch.zeros(5, 4), torch.zeros(5, dtype=torch.bool),
                                 torch.zeros(5, dtype=torch.long), torch.zeros(5), pos, neg)
    assert training_slots(sampling, 7).tolist() == [1, 3, 0, 4, -1, -1, -1]
    assert training_slots(sampling, 3).tolist() == [1, 3, 0]
    assert training_slots(sampling, None).tolist() == [1, 3, 0, 4, -1]


def stage_ious(stage):
    """The max IoU of each stage's proposals (GT boxes added left out), in order."""
    return stage.sampling.max_iou[~stage.sampling.gt_flags]


def test_without_refinement_each_stage_threshold_drops_the_loosest_positives():
    stages = sample_stages(cascade_parts(), shifted(SHIFTS), GT, LABELS, None, StayPut(),
                           torch.Generator().manual_seed(0))
    for stage in stages:  # the same five boxes each time, the positive GT box dropped
        assert stage_ious(stage).tolist() == pytest.approx([iou_of_shift(d) for d in SHIFTS])
    positive = [(~s.sampling.gt_flags & (s.sampling.gt_index >= 0)).tolist() for s in stages]
    assert positive == [[False, True, True, True, True, False],  # >= 0.5: d <= 30
                        [False, True, True, True, False, False],  # >= 0.6: d <= 20
                        [False, True, True, False, False, False]]  # >= 0.7: d <= 10
    assert all(s.sampling.gt_flags.tolist() == [True] + [False] * 5 for s in stages)


def test_the_stand_in_halves_each_positives_shift_stage_by_stage():
    refiner = TowardGT(GT, (200, 200))
    stages = sample_stages(cascade_parts(), shifted(SHIFTS), GT, LABELS, None, refiner,
                           torch.Generator().manual_seed(0))
    # stage 0: d = 5, 10, 20, 30 positive (IoU >= 0.5), d = 40 negative (0.429). Stage 1 gets
    # them in the training slots' order (positives, then the negative; the positive GT box
    # dropped), the positives moved half way: d = 2.5, 5, 10, 15; the negative unchanged
    assert stages[1].proposals.tolist() == shifted(torch.tensor([2.5, 5., 10., 15., 40.])).tolist()
    assert stages[2].proposals.tolist() == shifted(torch.tensor([1.25, 2.5, 5., 7.5, 40.])).tolist()
    expected = [[5, 10, 20, 30, 40], [2.5, 5, 10, 15, 40], [1.25, 2.5, 5, 7.5, 40]]
    for stage, shifts in zip(stages, expected):
        assert stage_ious(stage).tolist() == pytest.approx([iou_of_shift(d) for d in shifts])
        # at 0.5, 0.6 (15 -> 0.739) and 0.7 (7.5 -> 0.860) the same four stay positive
        assert (stage.sampling.gt_index[1:] >= 0).tolist() == [True] * 4 + [False]
        assert stage.sampling.sampled_pos.tolist() == [True] * 5 + [False]
        assert stage.sampling.sampled_neg.tolist() == [False] * 5 + [True]


def budget_config(tmp_path, num):
    """The cascade preset with every stage's sampler budget ``num``."""
    sections = "".join(
        f'[[model.train_cfg.rcnn]]\nassigner = {{ type = "MaxIoUAssigner", pos_iou_thr = {t}, '
        f'neg_iou_thr = {t}, min_pos_iou = {t}, match_low_quality = false }}\n'
        f'sampler = {{ type = "RandomSampler", num = {num}, pos_fraction = 0.25 }}\n'
        for t in (0.5, 0.6, 0.7))
    path = tmp_path / f"cascade_num{num}.toml"
    path.write_text(f'extends = ["{CASCADE}"]\n{sections}')
    return load_config(path).cfg


def test_a_sampler_budget_decides_what_the_next_stage_receives(tmp_path):
    """num = 4: one positive at most (int(4 * 0.25)) of the five (the GT box and d <= 30), and
    the one negative (d = 40); stage 1 receives those two in their slots, less the GT box if
    it was the positive drawn."""
    parts = RCNNParts.stages_from_config(budget_config(tmp_path, 4))
    for seed in range(6):
        stages = sample_stages(parts, shifted(SHIFTS), GT, LABELS, None, StayPut(),
                               torch.Generator().manual_seed(seed))
        first = stages[0].sampling
        assert int(first.sampled_pos.sum()) == 1 and first.sampled_neg.tolist() == [False] * 5 + [True]
        positive = first.boxes[first.sampled_pos]  # (1, 4)
        expected = [] if bool(first.sampled_pos[0]) else positive.tolist()  # the GT box drops
        assert stages[1].proposals.tolist() == expected + [shifted(SHIFTS[4:])[0].tolist()]


@pytest.mark.parametrize("num", [16, 512])
def test_the_replay_draws_what_cascade_training_draws(tmp_path, num):
    """The model's own regression (--checkpoint's refiner) and one generator: every stage
    samples the RoIs CascadeRoIHead.stage_samples samples, in its slot order. num = 16 (4
    positives at most): the draw decides; 512: every candidate is sampled, so a GT box kept
    or a proposal lost between stages would show."""
    cfg = budget_config(tmp_path, num)
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    images = ImageBatch(tensor=torch.randn(1, 3, 192, 256), img_shapes=[(192, 256)],
                        ori_shapes=[(192, 256)], scale_factors=torch.ones(1, 4))
    gt = torch.tensor([[20., 20., 60., 60.], [160., 100., 220., 180.]])
    labels = torch.tensor([0, 2])
    proposals = torch.cat([gt[g] + torch.randn(12, 4, generator=torch.Generator().manual_seed(g)) * 6
                           for g in range(2)]).clamp(min=0)  # (24, 4) around each GT
    with torch.no_grad():
        feats, _ = model(images.tensor)
        theirs = model.roi_head.stage_samples(
            feats, Proposals(proposals[None], torch.zeros(1, 24), torch.ones(1, 24, dtype=torch.bool)),
            images, DetTargets.from_lists([gt], [labels]), generator=torch.Generator().manual_seed(7))
    mine = sample_stages(RCNNParts.stages_from_config(cfg), proposals, gt, labels, None,
                         ModelRefiner(CheckpointRun(model, images, list(feats), proposals)),
                         generator=torch.Generator().manual_seed(7))
    assert len(mine) == len(theirs) == 3
    for stage, samples in zip(mine, theirs):
        sampling, valid = stage.sampling, samples.valid[0]
        expected = torch.cat([sampling.boxes[sampling.sampled_pos],
                              sampling.boxes[sampling.sampled_neg]])
        torch.testing.assert_close(samples.rois[0][valid], expected, rtol=0, atol=1e-4)
        assert int(samples.pos[0].sum()) == int(sampling.sampled_pos.sum())
        assert int(valid.sum()) == len(expected)
        if num == 16:
            assert int(sampling.sampled_pos.sum()) == 4
        else:  # every candidate: the 24 proposals (stage 0) or the 26 RoIs less the 2 GT boxes
            assert len(stage.proposals) == 24 and len(sampling.boxes) == 26


def test_each_stage_view_says_which_stage_and_how_its_boxes_were_made(tmp_path):
    tiny = make_tiny(tmp_path)
    splits = "".join(f'[data.{s}]\nann_file = "{tiny.ann_file}"\nimg_prefix = "{tiny.root / "images"}/"\n'
                     for s in ("train", "val", "test"))
    config = tmp_path / "cascade.toml"
    config.write_text(f'extends = ["{CASCADE}"]\n{splits}')
    cfg = load_config(config).cfg
    view = assign_boxes(cfg, tiny.image_a, ["10,20,40,50", "60,10,100,80,circle"])
    stages = visualize_roi_stages(cfg, view, pipeline_of(cfg, False), jitter=8, background=20)
    assert [s.source for s in stages] == ["jitter", "refined", "refined"]
    assert visualize_roi_sampling(cfg, view, pipeline_of(cfg, False), jitter=8,
                                  background=20).counts == stages[0].counts  # stage 0
    texts = [[text for text, _, _ in rcnn_legend_entries(s, False)] for s in stages]
    assert texts[1][:2] == ["stage s1 (2 of 3): IoU >= 0.6", "s0 positives moved 0.5 to GT"]
    assert texts[2][:2] == ["stage s2 (3 of 3): IoU >= 0.7", "s1 positives moved 0.5 to GT"]
    assert texts[2][5] == f"{len(stages[2].proposals)} refined proposals + 2 GT"
    assert texts[2][7] == f"mean IoU of positives {stages[2].mean_positive_iou:.2f}"
    assert rcnn_panel_title(stages[2], True).startswith("s2 sampled positives: ")
    # 2 panels of 256 x 192 (524 wide, 18 + 192 + 4 + 4 high) over 10 legend entries (stage,
    # boxes, 3 markers, 2 totals, the mean IoU, 2 GTs), 2 per line: 5 lines of 18, + 4
    assert len(texts[0]) == 10 and draw_roi_sampling(stages[0]).shape == (218 + 90 + 4, 524, 3)
    single = RoISamplingView(**{**stages[0].__dict__, "stage": None})  # Faster R-CNN's legend
    assert [t for t, _, _ in rcnn_legend_entries(single, False)] == texts[0][2:7] + texts[0][8:]


def test_rcnn_mask_sizes_are_per_stage():
    sizes = {name: can.rcnn_mask_sizes(load_config(ROOT / "presets" / f"{name}.toml").cfg.model)
             for name in ("cascade_mask_rcnn_tiny_synth", "cascade_rcnn_tiny_synth",
                          "mask_rcnn_tiny_synth", "faster_rcnn_tiny_synth")}
    assert sizes == {"cascade_mask_rcnn_tiny_synth": [28, 28, 28],
                     "cascade_rcnn_tiny_synth": [None, None, None],
                     "mask_rcnn_tiny_synth": [28], "faster_rcnn_tiny_synth": [None]}


def test_a_cascade_mask_rcnn_stage_cuts_its_mask_targets_at_its_own_rois(tmp_path):
    """Each stage's mask head learns from that stage's positives: the targets are cut at the
    refined RoIs, so with the stand-in they come closer, stage by stage, to the target cut at
    the GT's own box (the GT box is a sampled positive of every stage)."""
    synth = make_synthetic_dataset(tmp_path / "synth", num_train=0, num_val=2, image_size=128,
                                   seed=3)
    ann_file, images = synth.ann_file("val"), synth.img_prefix("val")
    splits = "".join(f'[data.{s}]\nann_file = "{ann_file}"\nimg_prefix = "{images}/"\n'
                     for s in ("train", "val", "test"))
    config = tmp_path / "cascade_mask.toml"
    config.write_text(f'extends = ["{ROOT / "presets" / "cascade_mask_rcnn_tiny_synth.toml"}"]\n'
                      f'{splits}')
    cfg = load_config(config).cfg
    image = sorted(Path(images).iterdir())[0]
    view = visualize_assignment(cfg, image, annotation_gt(cfg, Path(ann_file), image))
    stages = visualize_roi_stages(cfg, view, pipeline_of(cfg, False), jitter=8, background=10)
    distances = []
    for stage in stages:
        targets = stage.mask_targets  # (R', 28, 28)
        assert targets is not None and targets.shape == (len(stage.candidates), 28, 28)
        assert not targets[~stage.sampled_pos].any()  # only the sampled positives have one
        own = {int(g): targets[k] for k, g in enumerate(stage.gt_index) if stage.gt_flags[k]}
        chosen = stage.sampled_pos & ~stage.gt_flags  # the positive proposals
        distances.append(np.mean([np.abs(targets[k] - own[int(stage.gt_index[k])]).mean()
                                  for k in np.flatnonzero(chosen)]))
    assert distances[0] > distances[1] > distances[2]
