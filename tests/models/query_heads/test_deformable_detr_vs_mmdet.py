"""det's Deformable DETR against MMDetection 3.3's, value for value, on a tiny model in its
three variants (plain, ``with_box_refine``, refine + ``as_two_stage``).

The fixture (tests/fixtures/mmdet/deformable_detr.pt) was made by
tools/mmdet_fixtures/deformable_detr.py with MMDetection 3.3 on the CPU: ResNet-18 at
base_channels 16 (C3-C5), ChannelMapper to D channels with GroupNorm and an extra stride-2 conv
(4 levels), 2 encoder and 2 decoder layers (4 heads, 2 points, FFN 64, dropout 0), 20 queries,
3 classes, seeded weights (tests/fixtures/mmdet/deformable_detr_weights.py), DETR's fixture's
two images (the second padded) and GT. D = 32, and 256 two-stage (module docstring there).
det's model, built from a config with the same values, loads the same weights strictly (so its
state-dict names are MMDetection's) and must give the same Hungarian matching in both decoder
layers (and of the encoder's proposals), the same losses including ``d0.*`` and ``enc_*``
(1e-4 relative) and the same top-k detections (boxes 1e-3 px), with and without rescaling.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detcli.config.loader import load_config
from detcli.models.build import build_detector
from detcli.structures.batch import DetTargets, ImageBatch
from tests.fixtures.mmdet.deformable_detr_weights import deformable_detr_state_dict
from tests.fixtures.mmdet.synthetic import synthetic_images

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / "deformable_detr.pt"
R50_SHAPES = FIXTURE.with_name("deformable_detr_r50_shapes.json")
BATCH = (256, 320)
VARIANTS = {"plain": (32, False, False), "refine": (32, True, False),
            "twostage": (256, True, True)}
PRESETS = {"plain": "deformable_detr_r50", "refine": "deformable_detr_refine_r50",
           "twostage": "deformable_detr_refine_twostage_r50"}


def config(variant: str) -> dict:
    embed, refine, two_stage = VARIANTS[variant]
    deform = {"embed_dims": embed, "num_heads": 4, "num_levels": 4, "num_points": 2,
              "dropout": 0.0}
    ffn = {"embed_dims": embed, "feedforward_channels": 64, "ffn_drop": 0.0}
    return {
        "type": "DeformableDETR", "num_queries": 20, "num_feature_levels": 4,
        "with_box_refine": refine, "as_two_stage": two_stage,
        "backbone": {"type": "ResNet", "depth": 18, "base_channels": 16, "out_indices": [1, 2, 3],
                     "frozen_stages": -1, "norm_eval": True, "init_cfg": False},
        "neck": {"type": "ChannelMapper", "kernel_size": 1, "out_channels": embed,
                 "act_cfg": False, "norm_cfg": {"type": "GN", "num_groups": 8}, "num_outs": 4},
        "encoder": {"num_layers": 2, "layer_cfg": {"self_attn_cfg": deform, "ffn_cfg": ffn}},
        "decoder": {"num_layers": 2, "layer_cfg": {
            "self_attn_cfg": {"embed_dims": embed, "num_heads": 4, "dropout": 0.0},
            "cross_attn_cfg": deform, "ffn_cfg": ffn}},
        "positional_encoding": {"num_feats": embed // 2, "normalize": True, "offset": -0.5},
        "bbox_head": {"type": "DeformableDETRHead", "num_classes": 3},
        "test_cfg": {"max_per_img": 10},
    }


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=False)


_MODELS: dict[str, torch.nn.Module] = {}


def model_for(fixture, variant: str):
    if variant not in _MODELS:
        model = build_detector(config(variant))
        rec = fixture["variants"][variant]
        weights = deformable_detr_state_dict(rec["shapes"], fixture["seed"], rec["shared"],
                                             fixture["bias_offsets"])
        model.load_state_dict(weights, strict=True)
        _MODELS[variant] = model
    return _MODELS[variant]


def inputs(fixture) -> tuple[ImageBatch, DetTargets]:
    x = synthetic_images(2, *BATCH, fixture["img_shapes"], fixture["seed"])
    assert float(x.double().sum()) == pytest.approx(fixture["images_sum"], rel=1e-12)
    factors = torch.tensor([[sx, sy, sx, sy] for sx, sy in fixture["scale_factors"]])
    images = ImageBatch(tensor=x, img_shapes=fixture["img_shapes"],
                        ori_shapes=fixture["ori_shapes"], scale_factors=factors,
                        pad_shapes=[BATCH, BATCH])
    targets = DetTargets.from_lists([torch.tensor(b) for b in fixture["gt_boxes"]],
                                    [torch.tensor(c) for c in fixture["gt_labels"]])
    return images, targets


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_dict_names_are_mmdetections(fixture, variant):
    model = model_for(fixture, variant)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == \
        fixture["variants"][variant]["shapes"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_r50_presets_have_mmdetections_state_dicts(variant):
    """Key for key and shape for shape, so MMDetection's checkpoints load strictly."""
    with torch.device("meta"):
        model = build_detector(load_config(PRESETS[variant], []).cfg.model)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == json.loads(R50_SHAPES.read_text())[variant]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matching_of_every_decoder_layer(fixture, variant):
    model = model_for(fixture, variant)
    images, targets = inputs(fixture)
    model.train()
    with torch.no_grad():
        outputs = model(images.tensor, images.img_shapes)
        match = model.bbox_head.match(outputs, images, targets)
    expected = fixture["variants"][variant]["assigned_gt_inds"].reshape(4, -1)
    assert torch.equal(match.result.gt_index + 1, expected)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_losses_with_auxiliary_ones(fixture, variant):
    model = model_for(fixture, variant)
    images, targets = inputs(fixture)
    model.train()
    losses = model.loss(images, targets)
    expected = fixture["variants"][variant]["losses"]
    assert list(losses) == list(expected)
    for key, value in expected.items():
        assert float(losses[key].detach()) == pytest.approx(value, rel=1e-4), key


@pytest.mark.parametrize("mode", ["rescale", "no_rescale"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_detections(fixture, variant, mode):
    model = model_for(fixture, variant)
    images, _ = inputs(fixture)
    model.eval()
    dets = model.predict(images, rescale=mode == "rescale")
    for ours, theirs in zip(dets, fixture["variants"][variant]["predictions"][mode]):
        assert len(ours) == len(theirs["scores"]) == 10
        torch.testing.assert_close(ours.scores, theirs["scores"], rtol=0, atol=1e-5)
        assert torch.equal(ours.labels, theirs["labels"])
        torch.testing.assert_close(ours.boxes, theirs["boxes"], rtol=0, atol=1e-3)
