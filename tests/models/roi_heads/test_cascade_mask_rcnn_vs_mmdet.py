"""det's Cascade Mask R-CNN against MMDetection 3.3's, value for value, on a tiny model.

The fixture (tests/fixtures/mmdet/cascade_mask_rcnn.pt) was made by
tools/mmdet_fixtures/cascade_mask_rcnn.py with MMDetection 3.3 on the CPU: the tiny Cascade
R-CNN of test_cascade_vs_mmdet.py (same seed, images, GT boxes and box weights) with 1000
proposals, samplers of 1100 RoIs at most 110 positive (nothing drawn at random), and a mask
branch at 32 channels -- one 14 x 14 RoIAlign extractor and one FCNMaskHead config built per
stage -- each GT holding its inscribed ellipse as mask; the stages' mask logits scaled and
offset differently, so their average is none of them. det's model, built from a config with the
same values, loads the same weights strictly (MMDetection's names: ``roi_head.mask_head.t``)
and must give the same per-stage losses, ``s{t}.loss_mask`` among them (1e-4 relative), the
same boxes (1e-3 px), scores and labels, the same 28 x 28 mask probabilities (the stages'
sigmoids averaged, 1e-4) and pasted masks, with and without rescaling.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.models.build import build_detector
from detcli.structures.batch import DetTargets, ImageBatch
from tests.fixtures.mmdet.synthetic import ellipse_masks, synthetic_images, synthetic_state_dict
from tests.models.roi_heads.test_cascade_vs_mmdet import CONFIG as CASCADE_CONFIG

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / "cascade_mask_rcnn.pt"
BATCH = (256, 320)
MAX_POS = 110  # the samplers' positive budget: det's mask slots per image and stage


def mask_config() -> dict:
    """test_cascade_vs_mmdet.py's model with the fixture's mask branch and sampling."""
    cfg = copy.deepcopy(CASCADE_CONFIG)
    cfg["roi_head"]["mask_roi_extractor"] = {"type": "SingleRoIExtractor",
                                             "featmap_strides": [4, 8, 16, 32],
                                             "roi_layer": {"output_size": 14}}
    cfg["roi_head"]["mask_head"] = {"type": "FCNMaskHead", "num_classes": 3,
                                    "conv_out_channels": 32}
    cfg["train_cfg"]["rpn_proposal"]["max_per_img"] = 1000
    for stage in cfg["train_cfg"]["rcnn"]:
        stage["sampler"] = {"type": "RandomSampler", "num": 1100, "pos_fraction": 0.1}
        stage["mask_size"] = 28
    cfg["test_cfg"] = {"rpn": {"max_per_img": 1000},
                       "rcnn": {"max_per_img": 6, "mask_thr_binary": 0.5}}
    return cfg


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=False)


@pytest.fixture(scope="module")
def model(fixture):
    model = build_detector(mask_config())
    weights = synthetic_state_dict(fixture["shapes"], fixture["seed"], fixture["bias_offsets"],
                                   fixture["weight_scales"], fixture["gain"])
    model.load_state_dict(weights, strict=True)
    return model


def images_of(fixture) -> ImageBatch:
    x = synthetic_images(2, *BATCH, fixture["img_shapes"], fixture["seed"])
    assert float(x.double().sum()) == pytest.approx(fixture["images_sum"], rel=1e-12)
    factors = torch.tensor([[sx, sy, sx, sy] for sx, sy in fixture["scale_factors"]])
    return ImageBatch(tensor=x, img_shapes=fixture["img_shapes"],
                      ori_shapes=[tuple(s) for s in fixture["ori_shapes"]],
                      scale_factors=factors, pad_shapes=[BATCH, BATCH])


def targets_of(fixture) -> DetTargets:
    return DetTargets.from_lists(
        [torch.tensor(b) for b in fixture["gt_boxes"]],
        [torch.tensor(c) for c in fixture["gt_labels"]],
        masks=[ellipse_masks(b, *BATCH) for b in fixture["gt_boxes"]], mask_shape=BATCH)


def test_state_dict_names_are_mmdetections(model, fixture):
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == fixture["shapes"]
    heads = {k.split(".")[2] for k in ours if k.startswith("roi_head.mask_head.")}
    assert heads == {"0", "1", "2"}  # one mask head per stage, from the one config
    assert ours["roi_head.mask_head.2.conv_logits.weight"] == [3, 32, 1, 1]


def test_per_stage_losses_equal_mmdetections(model, fixture):
    images, targets = images_of(fixture), targets_of(fixture)
    model.train()
    with torch.no_grad():
        losses = model.loss(images, targets)
        feats, rpn = model(images.tensor)
        proposals = model.rpn_head.predict_proposals(rpn, images, model.train_cfg.rpn_proposal)
        stage_samples = model.roi_head.stage_samples(feats, proposals, images, targets)
    # MMDetection's positives at every stage, within the mask branch's slots
    assert [s.num_pos.tolist() for s in stage_samples] == fixture["num_pos"]
    assert max(max(n) for n in fixture["num_pos"]) <= MAX_POS
    expected = fixture["losses"]
    assert set(losses) == set(expected)
    assert {f"s{t}.loss_mask" for t in range(3)} <= set(expected)
    for key, value in expected.items():
        assert float(losses[key]) == pytest.approx(value, rel=1e-4, abs=1e-7), key


def _unpack(packed: torch.Tensor, shape: list[int]) -> np.ndarray:
    count = int(np.prod(shape))
    return np.unpackbits(packed.numpy())[:count].reshape(shape).astype(bool)


@pytest.fixture(scope="module")
def predicted(model, fixture) -> dict:
    """rescale -> (the DetectionBatch, the pasted Detections), and the features."""
    images = images_of(fixture)
    model.eval()
    with torch.no_grad():
        out = {rescale: (model.predict_batch(images, rescale=rescale),
                         model.predict(images, rescale=rescale)) for rescale in (True, False)}
        out["feats"], _ = model(images.tensor)
    return out


@pytest.mark.parametrize("rescale", [True, False], ids=["rescale", "no_rescale"])
def test_predictions_equal_mmdetections(predicted, fixture, rescale):
    batch, dets = predicted[rescale]
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
        assert (ours.masks.numpy() == masks).all(), f"image {i}"
        assert masks.any() and (~masks).any()  # a real comparison: both kinds of pixel


def test_the_mask_is_the_stages_average_not_the_last_stages(model, predicted, fixture):
    """The fixture's probabilities are the mean of the three stages' sigmoids: the last
    stage's mask head alone would give other ones."""
    batch, _ = predicted[False]
    with torch.no_grad():
        last = model.roi_head.stages[-1].predict_mask_probs(predicted["feats"], batch)
    theirs = fixture["predictions"]["no_rescale"][0]["mask_probs"]
    assert (last[0, :len(theirs)] - theirs).abs().max() > 0.1
