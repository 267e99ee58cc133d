"""Cascade R-CNN's RoI head on hand-worked cases: how a stage regresses its RoIs, which of
them the next stage gets, how the stages' IoU thresholds make the positives stricter, the
stage loss weights, the test-time average of the stages' logits, and the config's per-stage
checks. (MMDetection parity: test_cascade_vs_mmdet.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from detcli.analysis.roi_sampling import RCNNParts
from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.models.roi_heads.bbox_head import Shared2FCBBoxHead
from detcli.models.roi_heads.cascade_roi_head import (
    CascadeRoIHead,
    next_stage_proposals,
    refine_rois,
)
from detcli.models.roi_heads.roi_extractor import SingleRoIExtractor
from detcli.models.roi_heads.standard_roi_head import RoISamples
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.proposals import Proposals
from detcli.task.cascade_cfg import cascade_stage
from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoder
from detcli.task.samplers.random_sampler import RandomSamplerConfig
from detcli.text import is_loss_key
from tests.data.layouts import synth

CHANNELS = 4


def box_head(num_classes: int = 2, agnostic: bool = False) -> Shared2FCBBoxHead:
    return Shared2FCBBoxHead(num_classes=num_classes, in_channels=CHANNELS, fc_out_channels=8,
                             bbox_coder=DeltaXYWHBBoxCoder(), reg_class_agnostic=agnostic)


def constant_head(logits: list[float], num_classes: int = 2) -> Shared2FCBBoxHead:
    """A box head whose outputs do not depend on the RoI: these class logits, zero deltas (so
    a stage's regression returns its RoIs as they are)."""
    head = box_head(num_classes, agnostic=True)
    with torch.no_grad():
        for layer in (head.fc_cls, head.fc_reg):
            layer.weight.zero_()
            layer.bias.zero_()
        head.fc_cls.bias.copy_(torch.tensor(logits))
    return head


def cascade(heads: list[Shared2FCBBoxHead], weights=(1.0, 0.5, 0.25), num: int = 64):
    train_cfg = [cascade_stage(iou).model_copy(update={"sampler": RandomSamplerConfig(
        num=num, pos_fraction=0.5, add_gt_as_proposals=True)}) for iou in (0.5, 0.6, 0.7)]
    extractors = [SingleRoIExtractor(featmap_strides=[4], out_channels=CHANNELS)
                  for _ in heads]
    return CascadeRoIHead(bbox_roi_extractor=extractors, bbox_head=heads,
                          num_stages=len(heads), stage_loss_weights=weights,
                          train_cfg=train_cfg[:len(heads)])


def one_image(size: int = 300) -> ImageBatch:
    return ImageBatch(tensor=torch.zeros(1, 3, size, size), img_shapes=[(size, size)],
                      ori_shapes=[(size, size)], scale_factors=torch.ones(1, 4))


def feats(size: int = 300) -> list[torch.Tensor]:
    return [torch.randn(1, CHANNELS, size // 4, size // 4, generator=torch.Generator()
                        .manual_seed(0))]


# ---- a stage's regression --------------------------------------------------------------------

def test_refine_reads_the_gt_class_on_positives_and_the_best_score_elsewhere():
    head = box_head(num_classes=2)  # per-class deltas, stds 1
    rois = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]]])  # (1, 2, 4)
    # class 0: shift right by 0.1 widths (1 px); class 1: twice as wide (log 2)
    deltas = torch.tensor([0.1, 0.0, 0.0, 0.0, 0.0, 0.0, math.log(2.0), 0.0])
    bbox_pred = deltas.expand(1, 2, 8)
    cls_score = torch.tensor([[[3.0, 1.0, 0.0], [3.0, 1.0, 0.0]]])  # best foreground: class 0
    labels = torch.tensor([[1, -1]])  # RoI 0 a positive of class 1, RoI 1 not a positive
    boxes = refine_rois(head, rois, labels, cls_score, bbox_pred,
                        torch.tensor([[100.0, 100.0]]))
    # RoI 0 by class 1: centre 5, width 20 -> x from -5 (clipped to 0) to 15
    # RoI 1 by its best score, class 0: one pixel to the right
    assert boxes.tolist() == [[[0.0, 0.0, 15.0, 10.0], [1.0, 0.0, 11.0, 10.0]]]
    at_test_time = refine_rois(head, rois, None, cls_score, bbox_pred,
                               torch.tensor([[100.0, 100.0]]))
    assert at_test_time.tolist() == [[[1.0, 0.0, 11.0, 10.0], [1.0, 0.0, 11.0, 10.0]]]


def test_refine_clips_to_the_image_and_a_class_agnostic_head_ignores_the_class():
    head = box_head(num_classes=2, agnostic=True)
    rois = torch.tensor([[[80.0, 40.0, 100.0, 60.0]]])
    bbox_pred = torch.tensor([[[0.5, 0.0, 0.0, 0.0]]])  # 10 px right: past the 95 px edge
    for label in (0, 1):
        boxes = refine_rois(head, rois, torch.tensor([[label]]), torch.zeros(1, 1, 3),
                            bbox_pred, torch.tensor([[80.0, 95.0]]))  # (h, w)
        assert boxes.tolist() == [[[90.0, 40.0, 95.0, 60.0]]]


def test_the_next_stage_gets_the_sampled_rois_without_the_positive_gt_boxes():
    # slots: GT positive, proposal positive, GT negative (kept, as MMDetection's pos_is_gt
    # filter keeps it), proposal negative, padding
    pos = torch.tensor([[True, True, False, False, False]])
    valid = torch.tensor([[True, True, True, True, False]])
    gt_flags = torch.tensor([[True, False, True, False, False]])
    zeros = torch.zeros(1, 5)
    samples = RoISamples(rois=torch.zeros(1, 5, 4), valid=valid, pos=pos, gt_flags=gt_flags,
                         labels=torch.zeros(1, 5, dtype=torch.long), label_weights=zeros,
                         bbox_targets=torch.zeros(1, 5, 4), bbox_weights=zeros,
                         gt_index=torch.zeros(1, 5, dtype=torch.long), iou=zeros)
    refined = torch.arange(1.0, 21.0).view(1, 5, 4).requires_grad_()
    proposals = next_stage_proposals(samples, refined)
    assert proposals.valid.tolist() == [[False, True, True, True, False]]
    assert proposals.boxes[0, 1].tolist() == [5.0, 6.0, 7.0, 8.0]
    assert proposals.boxes[0, 0].tolist() == [0.0] * 4  # dropped slots hold zeros
    assert not proposals.boxes.requires_grad  # detached: no gradient through the cascade


# ---- per-stage assignment --------------------------------------------------------------------

def test_each_stage_takes_positives_at_its_own_iou():
    """GT (0, 0, 100, 100); proposals of IoU 0.55, 0.65 and 0.75 with it and one far away.
    The heads regress nothing, so every stage sees the same boxes: stage 0 (IoU >= 0.5) has
    all three as positives, stage 1 (0.6) two, stage 2 (0.7) one -- plus the GT box each
    sampler adds (the one stage t added is dropped before stage t + 1, which adds it again)."""
    head = cascade([constant_head([0.0, 0.0, 0.0]) for _ in range(3)])
    boxes = torch.tensor([[[0.0, 0.0, 100.0, 55.0], [0.0, 0.0, 100.0, 65.0],
                           [0.0, 0.0, 100.0, 75.0], [200.0, 200.0, 250.0, 250.0]]])
    proposals = Proposals(boxes, torch.ones(1, 4), torch.ones(1, 4, dtype=torch.bool))
    targets = DetTargets.from_lists([torch.tensor([[0.0, 0.0, 100.0, 100.0]])],
                                    [torch.tensor([1])])
    stages = head.stage_samples(feats(), proposals, one_image(), targets)
    expected_pos = [[100.0, 55.0, 65.0, 75.0], [100.0, 65.0, 75.0], [100.0, 75.0]]
    for t, samples in enumerate(stages):
        pos_rois = samples.rois[samples.pos]  # (num_pos, 4): GT first, then candidate order
        assert pos_rois[:, 3].tolist() == expected_pos[t], f"stage {t}"
        assert samples.labels[samples.pos].tolist() == [1] * len(expected_pos[t])
        assert int((samples.gt_flags & samples.valid).sum()) == 1  # one GT box, added again
        assert int(samples.num_sampled) == 5  # the GT box and the four proposals
    assert stages[1].iou[stages[1].pos].tolist() == pytest.approx([1.0, 0.65, 0.75])


def test_stage_losses_are_keyed_per_stage_and_weighted():
    torch.manual_seed(0)
    heads = [box_head() for _ in range(3)]
    boxes = torch.tensor([[[0.0, 0.0, 100.0, 55.0], [10.0, 5.0, 90.0, 95.0],
                           [200.0, 200.0, 250.0, 250.0]]])
    proposals = Proposals(boxes, torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool))
    targets = DetTargets.from_lists([torch.tensor([[0.0, 0.0, 100.0, 100.0]])],
                                    [torch.tensor([1])])
    weighted = cascade(heads, weights=(1.0, 0.5, 0.25)).loss(feats(), proposals, one_image(),
                                                             targets)
    plain = cascade(heads, weights=(1.0, 1.0, 1.0)).loss(feats(), proposals, one_image(),
                                                         targets)
    assert list(weighted) == [f"s{t}.{name}" for t in range(3)
                              for name in ("loss_cls", "loss_bbox", "acc")]
    for t, weight in enumerate((1.0, 0.5, 0.25)):
        for name in ("loss_cls", "loss_bbox"):
            key = f"s{t}.{name}"
            value = float(plain[key].detach())
            assert value > 0
            assert float(weighted[key].detach()) == pytest.approx(weight * value, rel=1e-6)
        assert float(weighted[f"s{t}.acc"]) == float(plain[f"s{t}.acc"])  # a metric: unweighted


def test_the_trainer_sums_stage_losses_and_not_their_accuracy():
    assert [k for k in ("loss_rpn_cls", "s0.loss_cls", "s2.loss_bbox", "s0.acc", "acc", "lr")
            if is_loss_key(k)] == ["loss_rpn_cls", "s0.loss_cls", "s2.loss_bbox"]


# ---- test time -------------------------------------------------------------------------------

def test_scores_are_the_softmax_of_the_stages_mean_logits():
    """Stage logits (class 0, class 1, background): (2, 0, 0), (0, 2, 0), (0, 0, 0): their mean
    (2/3, 2/3, 0) gives each class e^(2/3) / (2 e^(2/3) + 1) = 0.3979 (averaging the stages'
    probabilities instead would give 0.4090)."""
    head = cascade([constant_head([2.0, 0.0, 0.0]), constant_head([0.0, 2.0, 0.0]),
                    constant_head([0.0, 0.0, 0.0])])
    head.eval()
    proposals = Proposals(torch.tensor([[[20.0, 30.0, 120.0, 90.0]]]), torch.ones(1, 1),
                          torch.ones(1, 1, dtype=torch.bool))
    with torch.no_grad():
        dets = head.predict(feats(), proposals, one_image())
    expected = math.exp(2 / 3) / (2 * math.exp(2 / 3) + 1)
    assert int(dets.num_dets) == 2
    assert dets.scores[0, :2].tolist() == pytest.approx([expected, expected], rel=1e-6)
    assert sorted(dets.labels[0, :2].tolist()) == [0, 1]
    assert dets.boxes[0, 0].tolist() == [20.0, 30.0, 120.0, 90.0]  # zero deltas at every stage


# ---- config ----------------------------------------------------------------------------------

def tiny_model_cfg() -> dict:
    return load_config("cascade_rcnn_tiny_synth", []).cfg.model.model_dump()


@pytest.mark.parametrize("key,value,message", [
    ("bbox_head", lambda heads: heads[:2],
     r"model.roi_head.bbox_head has 2 entries but model.roi_head.num_stages is 3"),
    ("stage_loss_weights", lambda _: [1.0, 0.5],
     r"model.roi_head.stage_loss_weights has 2 entries but model.roi_head.num_stages is 3"),
])
def test_per_stage_lists_must_have_num_stages_entries(key, value, message):
    cfg = tiny_model_cfg()
    cfg["roi_head"][key] = value(cfg["roi_head"][key])
    with pytest.raises((ValidationError, ConfigError), match=message):
        build_detector(cfg)


def test_train_cfg_needs_one_rcnn_section_per_stage():
    cfg = tiny_model_cfg()
    cfg["train_cfg"]["rcnn"] = cfg["train_cfg"]["rcnn"][:1]
    with pytest.raises((ValidationError, ConfigError),
                       match=r"model.train_cfg.rcnn has 1 sections but "
                             r"model.roi_head.num_stages is 3"):
        build_detector(cfg)


def test_stages_must_classify_the_same_classes():
    cfg = tiny_model_cfg()
    cfg["roi_head"]["bbox_head"][1]["num_classes"] = 5
    with pytest.raises((ValidationError, ConfigError), match=r"bbox_head\[\*\].num_classes"):
        build_detector(cfg)


def test_each_stage_has_its_own_extractor_head_and_coder():
    model = build_detector(tiny_model_cfg())
    head = model.roi_head
    assert len(head.bbox_roi_extractor) == len(head.bbox_head) == head.num_stages == 3
    stds = [tuple(round(s, 3) for s in h.bbox_coder.stds) for h in head.bbox_head]
    assert stds == [(0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067)]
    assert [s.assigner.pos_iou_thr for s in head.stages] == [0.5, 0.6, 0.7]
    # the stage views share the ModuleLists' modules: one set of parameters
    assert all(s.bbox_head is h for s, h in zip(head.stages, head.bbox_head))


def test_the_roi_sampling_view_shows_the_first_stage_of_a_cascade():
    """`det viz assign` replays the RoI sampling of the proposals: in a cascade that is stage
    0's assigner (IoU 0.5) and sampler; the later stages sample refined boxes."""
    parts = RCNNParts.from_config(load_config("cascade_rcnn_tiny_synth", []).cfg)
    assert (parts.assigner_cfg.pos_iou_thr, parts.num, parts.add_gt) == (0.5, 256, True)


def test_det_init_on_a_cascade_preset_writes_every_stages_class_count(tmp_path):
    """A config's array replaces its base's, so `det init` writes the preset's whole list of
    box heads, each with the data's K (it used to write a table and fail validation)."""
    shapes = synth(tmp_path / "shapes")
    out = tmp_path / "cascade.toml"
    result = CliRunner().invoke(app, ["init", str(shapes.root), "--yes", "--preset",
                                      "cascade_rcnn_tiny_synth", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    heads = load_config(out, []).cfg.model.roi_head.bbox_head
    assert [head.num_classes for head in heads] == [3, 3, 3]  # square, circle, triangle
    assert [head.bbox_coder.target_stds[0] for head in heads] == [0.1, 0.05, 0.033]
