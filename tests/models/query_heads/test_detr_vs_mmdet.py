"""det's DETR against MMDetection 3.3's, value for value, on a tiny model.

The fixture (tests/fixtures/mmdet/detr.pt) was made by tools/mmdet_fixtures/detr.py with
MMDetection 3.3 on the CPU: ResNet-18 at base_channels 16 (C5), ChannelMapper to 32 channels,
2 encoder and 2 decoder layers at embed_dims 32 (4 heads, FFN 64, dropout 0), sine positions,
12 queries, 3 classes, seeded synthetic weights (tests/fixtures/mmdet/detr_weights.py; the
fixture keeps their names and shapes), two images of one padded batch (the second with
padding, so the attention masks and the positions' normalisation matter). det's model, built
from a config with the same values, loads the same weights strictly (so its state-dict names
are MMDetection's) and must give the same Hungarian matching in both decoder layers, the same
losses including the auxiliary ``d0.*`` ones (1e-4 relative), and the same top-k detections
(boxes 1e-3 px, scores, labels), with and without rescaling.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detcli.config.loader import load_config
from detcli.models.build import build_detector
from detcli.structures.batch import DetTargets, ImageBatch
from tests.fixtures.mmdet.detr_weights import detr_state_dict
from tests.fixtures.mmdet.synthetic import synthetic_images

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / "detr.pt"
R50_SHAPES = FIXTURE.with_name("detr_r50_shapes.json")
BATCH = (256, 320)
ATTN = {"embed_dims": 32, "num_heads": 4, "dropout": 0.0}
FFN = {"embed_dims": 32, "feedforward_channels": 64, "num_fcs": 2, "ffn_drop": 0.0}
CONFIG = {
    "type": "DETR",
    "num_queries": 12,
    "backbone": {"type": "ResNet", "depth": 18, "base_channels": 16, "out_indices": [3],
                 "frozen_stages": -1, "norm_eval": True, "init_cfg": False},
    "neck": {"type": "ChannelMapper", "kernel_size": 1, "out_channels": 32, "act_cfg": False,
             "norm_cfg": False, "num_outs": 1},
    "encoder": {"num_layers": 2, "layer_cfg": {"self_attn_cfg": ATTN, "ffn_cfg": FFN}},
    "decoder": {"num_layers": 2, "layer_cfg": {"self_attn_cfg": ATTN, "cross_attn_cfg": ATTN,
                                               "ffn_cfg": FFN}},
    "positional_encoding": {"type": "SinePositionalEncoding", "num_feats": 16,
                            "normalize": True},
    "bbox_head": {"type": "DETRHead", "num_classes": 3},
    "test_cfg": {"max_per_img": 8},
}


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=False)


@pytest.fixture(scope="module")
def model(fixture):
    model = build_detector(CONFIG)
    weights = detr_state_dict(fixture["shapes"], fixture["seed"], fixture["bias_offsets"],
                              fixture["weight_scales"], fixture["gain"])
    model.load_state_dict(weights, strict=True)
    return model


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


def test_state_dict_names_are_mmdetections(model, fixture):
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == fixture["shapes"]
    assert "encoder.layers.0.self_attn.attn.in_proj_weight" in fixture["shapes"]
    assert "decoder.layers.1.cross_attn.attn.out_proj.weight" in fixture["shapes"]


def test_the_r50_preset_has_mmdetections_detr_r50_state_dict():
    """Key for key and shape for shape, so MMDetection's DETR checkpoint loads strictly."""
    with torch.device("meta"):
        model = build_detector(load_config("detr_r50", []).cfg.model)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == json.loads(R50_SHAPES.read_text())


def test_matching_of_every_decoder_layer(model, fixture):
    images, targets = inputs(fixture)
    model.train()
    with torch.no_grad():
        outputs = model(images.tensor, images.img_shapes)
        match = model.bbox_head.match(outputs, images, targets)
    # MMDetection's gt_inds: 0 background, g + 1 the GT g
    expected = fixture["assigned_gt_inds"].reshape(4, -1)  # (layers x images, Q)
    assert torch.equal(match.result.gt_index + 1, expected)
    assert match.num_matched == (3, 2, 3, 2)


def test_losses_with_auxiliary_ones(model, fixture):
    images, targets = inputs(fixture)
    model.train()
    losses = model.loss(images, targets)
    expected = fixture["losses"]
    assert set(losses) == set(expected) == {
        "loss_cls", "loss_bbox", "loss_iou", "d0.loss_cls", "d0.loss_bbox", "d0.loss_iou"}
    for key, value in expected.items():
        assert float(losses[key].detach()) == pytest.approx(value, rel=1e-4), key


@pytest.mark.parametrize("mode", ["rescale", "no_rescale"])
def test_detections(model, fixture, mode):
    images, _ = inputs(fixture)
    model.eval()
    dets = model.predict(images, rescale=mode == "rescale")
    for ours, theirs in zip(dets, fixture["predictions"][mode]):
        assert len(ours) == len(theirs["scores"]) == 8
        torch.testing.assert_close(ours.scores, theirs["scores"], rtol=0, atol=1e-5)
        assert torch.equal(ours.labels, theirs["labels"])
        torch.testing.assert_close(ours.boxes, theirs["boxes"], rtol=0, atol=1e-3)
