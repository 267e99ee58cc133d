"""det's Cascade R-CNN against MMDetection 3.3's, value for value, on a tiny model.

The fixture (tests/fixtures/mmdet/cascade_rcnn.pt) was made by tools/mmdet_fixtures/cascade_rcnn.py
with MMDetection 3.3 on the CPU: ResNet-18 at base_channels 16, FPN and box heads at 32 / 64
channels, 3 classes, three stages (IoU 0.5 / 0.6 / 0.7, loss weights 1 / 0.5 / 0.25, coder stds
shrinking per stage, stage 1 regressing per class, the others class-agnostic), seeded synthetic
weights (tests/fixtures/mmdet/synthetic.py; the fixture keeps their names and shapes), two
images of one padded batch, samplers that draw nothing at random. det's model, built from a
config with the same values, loads the same weights strictly (so its state-dict names are
MMDetection's) and must give the same per-stage losses (1e-4 relative), the same boxes each
stage pools at test time, and the same detections (boxes 1e-3 px, scores, labels) with and
without rescaling to the original images.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detcli.engine.tta import merge_views
from detcli.models.build import build_detector
from detcli.structures.batch import DetTargets, ImageBatch
from tests.fixtures.mmdet.synthetic import synthetic_images, synthetic_state_dict

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / "cascade_rcnn.pt"
BATCH = (256, 320)
STDS = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
AGNOSTIC = [True, False, True]


def box_head(stage: int) -> dict:
    return {"type": "Shared2FCBBoxHead", "fc_out_channels": 64, "num_classes": 3,
            "reg_class_agnostic": AGNOSTIC[stage],
            "bbox_coder": {"type": "DeltaXYWHBBoxCoder", "target_means": [0.0] * 4,
                           "target_stds": STDS[stage]},
            "loss_bbox": {"type": "SmoothL1Loss", "beta": 1.0}}


def stage_train_cfg(iou: float) -> dict:
    return {"assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": iou, "neg_iou_thr": iou,
                         "min_pos_iou": iou, "match_low_quality": False},
            "sampler": {"type": "RandomSampler", "num": 4096, "pos_fraction": 0.5}}


CONFIG = {
    "type": "CascadeRCNN",
    "backbone": {"type": "ResNet", "depth": 18, "base_channels": 16, "frozen_stages": -1,
                 "norm_eval": True, "init_cfg": False},
    "neck": {"type": "FPN", "out_channels": 32, "num_outs": 5},
    "rpn_head": {"type": "RPNHead", "feat_channels": 32,
                 "anchor_generator": {"type": "AnchorGenerator", "scales": [8],
                                      "ratios": [0.5, 1.0, 2.0], "strides": [4, 8, 16, 32, 64]},
                 "loss_bbox": {"type": "SmoothL1Loss", "beta": 1.0 / 9.0}},
    "roi_head": {
        "type": "CascadeRoIHead",
        "bbox_roi_extractor": {"type": "SingleRoIExtractor", "featmap_strides": [4, 8, 16, 32],
                               "roi_layer": {"output_size": 7}},
        "bbox_head": [box_head(t) for t in range(3)],
    },
    "train_cfg": {
        "rpn": {"assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 0.7, "neg_iou_thr": 0.3,
                             "min_pos_iou": 0.3, "match_low_quality": True},
                "sampler": {"type": "RandomSampler", "num": 100000, "pos_fraction": 0.5,
                            "add_gt_as_proposals": False},
                "allowed_border": 0},
        "rpn_proposal": {"nms_pre": 2000, "max_per_img": 1000},
        "rcnn": [stage_train_cfg(iou) for iou in (0.5, 0.6, 0.7)],
    },
    "test_cfg": {"rcnn": {"max_per_img": 20}},
}


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=False)


@pytest.fixture(scope="module")
def model(fixture):
    model = build_detector(CONFIG)
    weights = synthetic_state_dict(fixture["shapes"], fixture["seed"], fixture["bias_offsets"],
                                   fixture["weight_scales"], fixture["gain"])
    model.load_state_dict(weights, strict=True)
    return model


def inputs(fixture) -> tuple[ImageBatch, DetTargets]:
    x = synthetic_images(2, *BATCH, fixture["img_shapes"], fixture["seed"])
    assert float(x.double().sum()) == pytest.approx(fixture["images_sum"], rel=1e-12)
    assert float(x.double().abs().sum()) == pytest.approx(fixture["images_abs_sum"], rel=1e-12)
    factors = torch.tensor([[sx, sy, sx, sy] for sx, sy in fixture["scale_factors"]])
    images = ImageBatch(tensor=x, img_shapes=fixture["img_shapes"],
                        ori_shapes=[tuple(s) for s in fixture["ori_shapes"]],
                        scale_factors=factors, pad_shapes=[BATCH, BATCH])
    targets = DetTargets.from_lists([torch.tensor(b) for b in fixture["gt_boxes"]],
                                    [torch.tensor(c) for c in fixture["gt_labels"]])
    return images, targets


def test_state_dict_names_are_mmdetections(model, fixture):
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == fixture["shapes"]
    stage_keys = sorted(k for k in ours if k.startswith("roi_head."))
    assert stage_keys == sorted(
        f"roi_head.bbox_head.{t}.{layer}.{p}" for t in range(3)
        for layer in ("shared_fcs.0", "shared_fcs.1", "fc_cls", "fc_reg")
        for p in ("weight", "bias"))
    assert ours["roi_head.bbox_head.1.fc_reg.weight"] == [12, 64]  # per class: 4K outputs
    assert ours["roi_head.bbox_head.2.fc_reg.weight"] == [4, 64]  # class-agnostic


def test_per_stage_losses_equal_mmdetections(model, fixture):
    images, targets = inputs(fixture)
    model.train()
    with torch.no_grad():
        losses = model.loss(images, targets)
    expected = fixture["losses"]
    assert set(losses) == set(expected)
    assert {"s0.loss_cls", "s1.loss_bbox", "s2.acc"} <= set(expected)
    for key, value in expected.items():
        assert float(losses[key]) == pytest.approx(value, rel=1e-4, abs=1e-7), key


def test_each_stage_pools_mmdetections_boxes(model, fixture):
    """At test time stage t pools stage t - 1's regression of its boxes: the first rows of
    each stage's RoIs, image 0 (its proposals come first in MMDetection's flat list)."""
    images, _ = inputs(fixture)
    pooled = []
    hooks = [extractor.register_forward_hook(
        lambda module, args, output: pooled.append(args[1][:8].detach().clone()))
        for extractor in model.roi_head.bbox_roi_extractor]
    model.eval()
    with torch.no_grad():
        model.predict_batch(images, rescale=True)
    for hook in hooks:
        hook.remove()
    assert len(pooled) == len(fixture["stage_rois"]) == 3
    for stage, (ours, theirs) in enumerate(zip(pooled, fixture["stage_rois"])):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-3, msg=f"stage {stage}")
    assert not torch.allclose(pooled[0], pooled[1])  # the stages really refine


@pytest.mark.parametrize("rescale", [True, False], ids=["rescale", "no_rescale"])
def test_detections_equal_mmdetections(model, fixture, rescale):
    images, _ = inputs(fixture)
    model.eval()
    with torch.no_grad():
        dets = model.predict(images, rescale=rescale)
    expected = fixture["predictions"]["rescale" if rescale else "no_rescale"]
    for ours, theirs in zip(dets, expected):
        assert len(ours) == len(theirs["scores"]) > 0
        torch.testing.assert_close(ours.boxes, theirs["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(ours.scores, theirs["scores"], rtol=0, atol=1e-5)
        assert ours.labels.tolist() == theirs["labels"].tolist()


def test_tta_merge_of_one_view_gives_mmdetections_detections(model, fixture):
    """Test-time augmentation reaches the cascade through the detector's candidates (its
    detections in network-input pixels): one unflipped view, mapped back and merged, is
    MMDetection's rescaled prediction."""
    images, _ = inputs(fixture)
    model.eval()
    with torch.no_grad():
        merged = merge_views(model, [images])
    for ours, theirs in zip(merged, fixture["predictions"]["rescale"]):
        assert len(ours) == len(theirs["scores"]) > 0
        torch.testing.assert_close(ours.boxes, theirs["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(ours.scores, theirs["scores"], rtol=0, atol=1e-5)
        assert ours.labels.tolist() == theirs["labels"].tolist()
