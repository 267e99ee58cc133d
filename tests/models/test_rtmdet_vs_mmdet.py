"""det's RTMDet against MMDetection 3.3's, value for value, on two tiny models.

The fixture (tests/fixtures/mmdet/rtmdet.pt) was made by tools/mmdet_fixtures/rtmdet.py with
MMDetection 3.3 on the CPU: CSPNeXt at deepen 0.167 / widen 0.125, CSPNeXtPAFPN and
RTMDetSepBNHead at 32 channels, 3 classes, seeded synthetic weights (tests/fixtures/mmdet/
synthetic.py; the head's shared convs tied to level 0), two images of one 256 x 320 batch whose
second has its own 224 x 288 padded area. ``tiny`` has rtmdet-tiny's switches, ``variant`` the
others (depthwise-separable backbone and neck, no channel attention, expand_ratio 0.25,
objectness, exp_on_reg, 3 x 3 predictors). det's model, built from a config with the same values,
loads the same weights strictly (so its state-dict names are MMDetection's) and must give the
same assignment (positives, their GT and IoU soft labels), losses (1e-4 relative) and
detections (boxes within 1e-3 px, scores, labels), with and without rescaling.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from detcli.models.build import build_detector
from detcli.structures.batch import DetTargets, ImageBatch
from tests.fixtures.mmdet.synthetic import synthetic_images, synthetic_state_dict

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "mmdet" / "rtmdet.pt"
BATCH = (256, 320)
BN = {"type": "BN"}  # MMDetection's dict(type="BN"): eps 1e-5, momentum 0.1
SWITCHES = {
    "tiny": ({}, {}, {"with_objectness": False, "exp_on_reg": False, "pred_kernel_size": 1}),
    "variant": ({"use_depthwise": True, "channel_attention": False, "expand_ratio": 0.25},
                {"use_depthwise": True, "expand_ratio": 0.25},
                {"with_objectness": True, "exp_on_reg": True, "pred_kernel_size": 3}),
}
SHARED = re.compile(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.(\d+)\.(.*conv\.weight|.*conv\.bias)$")


def config(name: str) -> dict:
    backbone, neck, head = SWITCHES[name]
    return {
        "type": "RTMDet",
        "backbone": {"type": "CSPNeXt", "deepen_factor": 0.167, "widen_factor": 0.125,
                     "norm_cfg": BN, **backbone},
        "neck": {"type": "CSPNeXtPAFPN", "out_channels": 32, "num_csp_blocks": 1,
                 "norm_cfg": BN, **neck},
        "bbox_head": {"type": "RTMDetSepBNHead", "num_classes": 3, "stacked_convs": 2,
                      "feat_channels": 32, "norm_cfg": BN, **head},
    }


def tie_shared(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """As the fixture's generator: every level's copy of a shared conv gets level 0's value."""
    out = dict(weights)
    for key in weights:
        match = SHARED.match(key)
        if match and match.group(2) != "0":
            tower, _, i, rest = match.groups()
            out[key] = weights[f"bbox_head.{tower}_convs.0.{i}.{rest}"]
    return out


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=False)


def model(fixture: dict, name: str):
    """A fresh model (a train-mode forward changes BN's running statistics)."""
    det = build_detector(config(name))
    record = fixture["models"][name]
    weights = synthetic_state_dict(record["shapes"], fixture["seed"], record["bias_offsets"],
                                   fixture["weight_scales"], fixture["gain"])
    det.load_state_dict(tie_shared(weights), strict=True)
    return det


def inputs(fixture: dict) -> tuple[ImageBatch, DetTargets]:
    x = synthetic_images(2, *BATCH, fixture["img_shapes"], fixture["seed"])
    assert float(x.double().sum()) == pytest.approx(fixture["images_sum"], rel=1e-12)
    factors = torch.tensor([[sx, sy, sx, sy] for sx, sy in fixture["scale_factors"]])
    images = ImageBatch(tensor=x, img_shapes=fixture["img_shapes"],
                        ori_shapes=[tuple(s) for s in fixture["ori_shapes"]],
                        scale_factors=factors,
                        pad_shapes=[tuple(s) for s in fixture["pad_shapes"]])
    targets = DetTargets.from_lists([torch.tensor(b) for b in fixture["gt_boxes"]],
                                    [torch.tensor(c) for c in fixture["gt_labels"]])
    return images, targets


@pytest.mark.parametrize("name", ["tiny", "variant"])
def test_state_dict_names_are_mmdetections(fixture, name):
    det = model(fixture, name)
    ours = {k: list(v.shape) for k, v in det.state_dict().items()}
    assert ours == fixture["models"][name]["shapes"]
    assert "backbone.stem.0.conv.weight" in ours and "bbox_head.rtm_cls.0.weight" in ours
    assert "neck.reduce_layers.0.conv.weight" in ours
    # shared convs: one tensor under every level's name, separate BN per level
    head = det.bbox_head
    assert head.cls_convs[2][1].conv.weight is head.cls_convs[0][1].conv.weight
    assert head.cls_convs[2][1].bn is not head.cls_convs[0][1].bn


@pytest.mark.parametrize("name", ["tiny", "variant"])
def test_assignment_equals_mmdetections(fixture, name):
    det = model(fixture, name)
    images, targets = inputs(fixture)
    det.train()
    with torch.no_grad():
        outputs = det(images.tensor)
        result, pred = det.bbox_head.assign(outputs, images, targets)
        valid = pred.valid
    for i, theirs in enumerate(fixture["models"][name]["assigned"]):
        gt_index = result.gt_index[i][valid[i]]  # MMDetection assigns the valid points only
        expected = theirs["gt_index"]
        assert int(valid[i].sum()) == len(expected)
        assert gt_index.tolist() == expected.tolist(), f"image {i}"
        positive = expected >= 0
        assert int(positive.sum()) > len(fixture["gt_boxes"][i])  # dynamic k above 1 somewhere
        torch.testing.assert_close(result.max_iou[i][valid[i]][positive],
                                   theirs["quality"][positive], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny", "variant"])
def test_losses_equal_mmdetections(fixture, name):
    det = model(fixture, name)
    images, targets = inputs(fixture)
    det.train()
    with torch.no_grad():
        losses = det.loss(images, targets)
    expected = fixture["models"][name]["losses"]
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert float(losses[key]) == pytest.approx(value, rel=1e-4), key


def match_detections(ours, theirs: dict) -> float:
    """The largest box difference (px) between our detections and MMDetection's, each of ours
    paired with one of theirs of the same label and a score within 1e-5 (random tiny models
    give near-tied scores, whose order float rounding may swap; the pairing is one-to-one)."""
    free = torch.ones(len(theirs["scores"]), dtype=torch.bool)
    worst = 0.0
    for box, score, label in zip(ours.boxes, ours.scores, ours.labels):
        same = free & (theirs["labels"] == label) & ((theirs["scores"] - score).abs() <= 1e-5)
        assert same.any(), f"no detection of MMDetection's matches {box.tolist()} {float(score)}"
        diff = (theirs["boxes"] - box).abs().amax(dim=1).masked_fill(~same, float("inf"))
        best = int(diff.argmin())
        free[best] = False
        worst = max(worst, float(diff[best]))
    return worst


@pytest.mark.parametrize("name", ["tiny", "variant"])
@pytest.mark.parametrize("rescale", [True, False], ids=["rescale", "no_rescale"])
def test_predictions_equal_mmdetections(fixture, name, rescale):
    det = model(fixture, name)
    images, _ = inputs(fixture)
    det.eval()
    dets = det.predict(images, rescale=rescale)
    expected = fixture["models"][name]["predictions"]["rescale" if rescale else "no_rescale"]
    for ours, theirs in zip(dets, expected):
        assert len(ours) == len(theirs["scores"]) == 300
        torch.testing.assert_close(ours.scores, theirs["scores"], rtol=0, atol=1e-5)
        assert match_detections(ours, theirs) <= 1e-3
        assert len(set(ours.labels.tolist())) >= 2
