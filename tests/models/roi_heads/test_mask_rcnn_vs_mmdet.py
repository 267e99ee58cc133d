"""det's Mask R-CNN against MMDetection 3.3's, value for value, on a tiny model.

The fixture (tests/fixtures/mmdet/mask_rcnn.pt) was made by tools/mmdet_fixtures/mask_rcnn.py
with MMDetection 3.3 on the CPU: ResNet-18 at base_channels 16, FPN and heads at 32 channels,
3 classes, seeded synthetic weights (tests/fixtures/mmdet/synthetic.py; the fixture keeps their
names and shapes), two images of one padded batch with elliptical GT masks, samplers that draw
nothing at random. det's model, built from a config with the same values, loads the same
weights strictly (so its state-dict names are MMDetection's) and must give the same losses
(1e-4 relative), boxes (1e-3 px), scores and labels, 28 x 28 mask probabilities, and pasted
binary masks (>= 99.9 % of pixels equal), with and without rescaling to the original images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.models.build import build_detector
from detcli.models.detectors import MaskRCNN
from detcli.models.roi_heads import paste_detections
from detcli.structures.batch import DetTargets, ImageBatch
from tests.fixtures.mmdet.synthetic import (
    ellipse_masks,
    synthetic_images,
    synthetic_state_dict,
)

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / "mask_rcnn.pt"
BATCH = (256, 320)
EXTRACTOR = {"type": "SingleRoIExtractor", "featmap_strides": [4, 8, 16, 32]}
CONFIG = {
    "type": "MaskRCNN",
    "backbone": {"type": "ResNet", "depth": 18, "base_channels": 16, "frozen_stages": -1,
                 "norm_eval": True, "init_cfg": False},
    "neck": {"type": "FPN", "out_channels": 32, "num_outs": 5},
    "rpn_head": {"type": "RPNHead", "feat_channels": 32,
                 "anchor_generator": {"type": "AnchorGenerator", "scales": [8],
                                      "ratios": [0.5, 1.0, 2.0], "strides": [4, 8, 16, 32, 64]}},
    "roi_head": {
        "type": "StandardRoIHead",
        "bbox_roi_extractor": {**EXTRACTOR, "roi_layer": {"output_size": 7}},
        "bbox_head": {"type": "Shared2FCBBoxHead", "fc_out_channels": 64, "num_classes": 3},
        "mask_roi_extractor": {**EXTRACTOR, "roi_layer": {"output_size": 14}},
        "mask_head": {"type": "FCNMaskHead", "num_classes": 3, "conv_out_channels": 32},
    },
    "train_cfg": {
        # a section given replaces its defaults: the RPN's assigner is written out
        "rpn": {"assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 0.7, "neg_iou_thr": 0.3,
                             "min_pos_iou": 0.3, "match_low_quality": True},
                "sampler": {"type": "RandomSampler", "num": 100000, "pos_fraction": 0.5,
                            "add_gt_as_proposals": False}},
        "rcnn": {"assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 0.5, "neg_iou_thr": 0.5,
                              "min_pos_iou": 0.5, "match_low_quality": True},
                 "sampler": {"type": "RandomSampler", "num": 400, "pos_fraction": 0.25},
                 "mask_size": 28},
        "rpn_proposal": {"nms_pre": 1000, "max_per_img": 300},
    },
    "test_cfg": {"rpn": {"nms_pre": 1000, "max_per_img": 300},
                 "rcnn": {"max_per_img": 12, "mask_thr_binary": 0.5}},
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


def images_of(fixture) -> ImageBatch:
    x = synthetic_images(2, *BATCH, fixture["img_shapes"], fixture["seed"])
    assert float(x.double().sum()) == pytest.approx(fixture["images_sum"], rel=1e-12)
    assert float(x.double().abs().sum()) == pytest.approx(fixture["images_abs_sum"], rel=1e-12)
    factors = torch.tensor([[sx, sy, sx, sy] for sx, sy in fixture["scale_factors"]])
    return ImageBatch(tensor=x, img_shapes=fixture["img_shapes"],
                      ori_shapes=[tuple(s) for s in fixture["ori_shapes"]],
                      scale_factors=factors, pad_shapes=[BATCH, BATCH])


def targets_of(fixture) -> DetTargets:
    boxes = [torch.tensor(b) for b in fixture["gt_boxes"]]
    return DetTargets.from_lists(
        boxes, [torch.tensor(c) for c in fixture["gt_labels"]],
        masks=[ellipse_masks(b, *BATCH) for b in fixture["gt_boxes"]], mask_shape=BATCH)


def test_state_dict_names_are_mmdetections(model, fixture):
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == fixture["shapes"]
    mask_keys = sorted(k for k in ours if ".mask_head." in k)
    assert mask_keys == sorted(
        [f"roi_head.mask_head.convs.{i}.conv.{p}" for i in range(4) for p in ("weight", "bias")]
        + ["roi_head.mask_head.upsample.weight", "roi_head.mask_head.upsample.bias",
           "roi_head.mask_head.conv_logits.weight", "roi_head.mask_head.conv_logits.bias"])


def test_losses_equal_mmdetections(model, fixture):
    images, targets = images_of(fixture), targets_of(fixture)
    model.train()
    with torch.no_grad():
        losses = model.loss(images, targets)
        feats, rpn = model(images.tensor)
        proposals = model.rpn_head.predict_proposals(rpn, images, model.train_cfg.rpn_proposal)
        samples = model.roi_head.sample(proposals, targets)
    # the same RoIs as MMDetection's, every candidate kept (nothing drawn at random)
    assert samples.num_pos.tolist() == fixture["num_pos"]
    assert samples.num_sampled.tolist() == fixture["num_sampled"]
    expected = fixture["losses"]
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert float(losses[key]) == pytest.approx(value, rel=1e-4, abs=1e-7), key


def _unpack(packed: torch.Tensor, shape: list[int]) -> np.ndarray:
    count = int(np.prod(shape))
    return np.unpackbits(packed.numpy())[:count].reshape(shape).astype(bool)


@pytest.mark.parametrize("rescale", [True, False], ids=["rescale", "no_rescale"])
def test_predictions_equal_mmdetections(model, fixture, rescale):
    images = images_of(fixture)
    model.eval()
    with torch.no_grad():
        batch = model.predict_batch(images, rescale=rescale)
    # what MaskRCNN.predict does with the batch (test_mask_roi_head.py runs predict itself)
    dets = paste_detections(batch, MaskRCNN.paste_sizes(images, rescale),
                            model.test_cfg.rcnn.mask_thr_binary)
    expected = fixture["predictions"]["rescale" if rescale else "no_rescale"]
    for i, (ours, theirs) in enumerate(zip(dets, expected)):
        assert len(ours) == len(theirs["scores"]) > 0
        torch.testing.assert_close(ours.boxes, theirs["boxes"], rtol=0, atol=1e-3)
        torch.testing.assert_close(ours.scores, theirs["scores"], rtol=0, atol=1e-5)
        assert ours.labels.tolist() == theirs["labels"].tolist()
        probs = batch.mask_probs[i, :len(ours)]
        torch.testing.assert_close(probs, theirs["mask_probs"], rtol=0, atol=1e-4)
        masks = _unpack(theirs["masks_packed"], theirs["mask_shape"])
        assert tuple(ours.masks.shape) == masks.shape
        equal = (ours.masks.numpy() == masks).mean()
        assert equal >= 0.999, f"image {i}: {equal:.5f} of the pixels equal"
        assert masks.any() and (~masks).any()  # a real comparison: both kinds of pixel
