"""det's DINO against MMDetection 3.3's, value for value, on a tiny model.

The fixture (tests/fixtures/mmdet/dino.pt) was made by tools/mmdet_fixtures/dino.py with
MMDetection 3.3 on the CPU: ResNet-18 at base_channels 16 (C3-C5), ChannelMapper to 32 channels
with GroupNorm and a fourth level, 2 deformable encoder and 2 DINO decoder layers at embed_dims
32, 30 queries, 3 classes, denoising with ``num_dn_queries`` 12 (3 GT: 4 groups, 24 denoising
queries), seeded synthetic weights (tests/fixtures/mmdet/dino_weights.py), DETR's two images
and GT. MMDetection's denoising noise is random: the fixture recorded its draws, and
:func:`replayed_noise` puts them into det's layout, so det's generator makes the same queries.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from detcli.config.loader import load_config
from detcli.models.build import build_detector
from detcli.models.query_heads.dino_head import split_queries
from detcli.models.transformer.denoising import (
    CdnNoise,
    CdnQueryGenerator,
    DenoisingGroupConfig,
)
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.queries import QueryOutputs
from tests.fixtures.mmdet.dino_weights import dino_state_dict
from tests.fixtures.mmdet.synthetic import synthetic_images

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / "dino.pt"
R50_SHAPES = FIXTURE.with_name("dino_4scale_r50_shapes.json")
NUM_QUERIES = 30


@pytest.fixture(scope="module")
def fixture() -> dict:
    return torch.load(FIXTURE, weights_only=False)


def gt(fixture) -> DetTargets:
    return DetTargets.from_lists([torch.tensor(b) for b in fixture["gt_boxes"]],
                                 [torch.tensor(c) for c in fixture["gt_labels"]])


def replayed_noise(fixture, num_groups: int) -> CdnNoise:
    """MMDetection's draws (flat: copy r of the batch's concatenated target t at r * T + t)
    in det's (N, 2P, G) layout; the replacement classes of the copies it chose (p < 0.25)."""
    counts = [len(b) for b in fixture["gt_boxes"]]
    total, slots, copies = sum(counts), max(counts), 2 * num_groups
    image = torch.cat([torch.full((c,), i) for i, c in enumerate(counts)])  # (T,)
    slot = torch.cat([torch.arange(c) for c in counts])  # (T,)
    noise = fixture["noise"]
    p = noise["label_p"].reshape(copies, total)
    new = torch.zeros(copies * total, dtype=torch.long)
    new[(noise["label_p"] < 0.25).nonzero().flatten()] = noise["new_labels"]
    new = new.reshape(copies, total)
    sign = noise["box_sign"].reshape(copies, total, 4) * 2.0 - 1.0
    part = noise["box_part"].reshape(copies, total, 4)
    out = CdnNoise(label_draw=torch.ones(len(counts), copies, slots),
                   new_labels=torch.zeros(len(counts), copies, slots, dtype=torch.long),
                   box_sign=torch.ones(len(counts), copies, slots, 4),
                   box_part=torch.zeros(len(counts), copies, slots, 4))
    out.label_draw[image, :, slot] = p.T
    out.new_labels[image, :, slot] = new.T
    out.box_sign[image, :, slot] = sign.transpose(0, 1)
    out.box_part[image, :, slot] = part.transpose(0, 1)
    return out


def test_denoising_queries_are_mmdetections(fixture):
    gen = CdnQueryGenerator(num_classes=3, embed_dims=32, num_matching_queries=NUM_QUERIES,
                            group_cfg=DenoisingGroupConfig(num_dn_queries=12))
    key = "dn_query_generator.label_embedding.weight"
    gen.label_embedding.weight.data.copy_(dino_state_dict({key: fixture["shapes"][key]},
                                                          fixture["seed"])[key])
    targets = gt(fixture)
    num_groups = gen.num_groups(targets.labels.shape[1])
    assert num_groups == fixture["dn"]["meta"]["num_denoising_groups"] == 4
    out = gen(targets.boxes, targets.labels, torch.tensor(fixture["img_shapes"]),
              noise=replayed_noise(fixture, num_groups))
    assert out.meta.num_queries == fixture["dn"]["meta"]["num_denoising_queries"] == 24
    assert torch.equal(out.attn_mask, fixture["dn"]["attn_mask"])
    torch.testing.assert_close(out.label_query, fixture["dn"]["label_query"], rtol=0, atol=0)
    torch.testing.assert_close(out.bbox_query, fixture["dn"]["bbox_query"], rtol=1e-6, atol=1e-6)


ATTN = {"embed_dims": 32, "num_heads": 4, "dropout": 0.0}
DEFORM = {"embed_dims": 32, "num_heads": 4, "num_levels": 4, "num_points": 4, "dropout": 0.0}
FFN = {"embed_dims": 32, "feedforward_channels": 64, "num_fcs": 2, "ffn_drop": 0.0}
CONFIG = {
    "type": "DINO",
    "num_queries": NUM_QUERIES,
    "backbone": {"type": "ResNet", "depth": 18, "base_channels": 16, "out_indices": [1, 2, 3],
                 "frozen_stages": -1, "norm_eval": True, "init_cfg": False},
    "neck": {"type": "ChannelMapper", "kernel_size": 1, "out_channels": 32, "act_cfg": False,
             "norm_cfg": {"type": "GN", "num_groups": 8}, "num_outs": 4},
    "encoder": {"num_layers": 2, "layer_cfg": {"self_attn_cfg": DEFORM, "ffn_cfg": FFN}},
    "decoder": {"num_layers": 2, "layer_cfg": {"self_attn_cfg": ATTN, "cross_attn_cfg": DEFORM,
                                               "ffn_cfg": FFN}},
    "positional_encoding": {"type": "SinePositionalEncoding", "num_feats": 16,
                            "normalize": True, "offset": 0.0, "temperature": 20},
    "bbox_head": {"type": "DINOHead", "num_classes": 3},
    "dn_cfg": {"group_cfg": {"num_dn_queries": 12}},
    "test_cfg": {"max_per_img": 20},
}
BATCH = (256, 320)


@pytest.fixture(scope="module")
def model(fixture):
    model = build_detector(CONFIG)
    weights = dino_state_dict(fixture["shapes"], fixture["seed"], fixture["bias_offsets"],
                              fixture["weight_scales"])
    model.load_state_dict(weights, strict=True)
    return model


def inputs(fixture) -> tuple[ImageBatch, DetTargets]:
    x = synthetic_images(2, *BATCH, fixture["img_shapes"], fixture["seed"])
    assert float(x.double().sum()) == pytest.approx(fixture["images_sum"], rel=1e-12)
    factors = torch.tensor([[sx, sy, sx, sy] for sx, sy in fixture["scale_factors"]])
    images = ImageBatch(tensor=x, img_shapes=fixture["img_shapes"],
                        ori_shapes=fixture["ori_shapes"], scale_factors=factors,
                        pad_shapes=[BATCH, BATCH])
    return images, gt(fixture)


def replaying(model, fixture, monkeypatch) -> None:
    """The model's generator draws MMDetection's recorded noise instead of its own."""
    gen = model.dn_query_generator
    monkeypatch.setattr(gen, "draw_noise",
                        lambda num_images, num_groups, num_slots, device:
                        replayed_noise(fixture, num_groups))


def test_state_dict_names_are_mmdetections(model, fixture):
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == fixture["shapes"]
    for key in ("dn_query_generator.label_embedding.weight", "decoder.ref_point_head.layers.1.weight",
                "decoder.norm.weight", "memory_trans_fc.weight", "query_embedding.weight",
                "bbox_head.cls_branches.2.weight", "bbox_head.reg_branches.2.4.bias"):
        assert key in fixture["shapes"], key


def test_the_r50_preset_has_mmdetections_dino_4scale_r50_state_dict():
    """Key for key and shape for shape, so MMDetection's DINO checkpoint loads strictly."""
    with torch.device("meta"):
        model = build_detector(load_config("dino_4scale_r50", []).cfg.model)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == json.loads(R50_SHAPES.read_text())


def test_losses_matching_encoder_and_denoising(model, fixture, monkeypatch):
    images, targets = inputs(fixture)
    replaying(model, fixture, monkeypatch)
    model.train()
    losses = model.loss(images, targets)
    expected = fixture["losses"]
    assert set(losses) == set(expected)
    assert {"enc_loss_cls", "dn_loss_iou", "d0.dn_loss_cls", "d0.loss_bbox"} <= set(losses)
    for key, value in expected.items():
        assert float(losses[key].detach()) == pytest.approx(value, rel=1e-4), key


def test_decoder_states_references_and_matching(model, fixture, monkeypatch):
    images, targets = inputs(fixture)
    replaying(model, fixture, monkeypatch)
    seen = {}
    hook = model.decoder.register_forward_hook(
        lambda _m, _a, out: seen.update(hidden=out[0].detach(), refs=out[1].detach()))
    model.train()
    with torch.no_grad():
        denoising = model.dn_query_generator(targets.boxes, targets.labels, images.img_shapes)
        outputs, encoder_outputs = model.run(images.tensor, images.img_shapes, denoising)
    hook.remove()
    torch.testing.assert_close(seen["hidden"], fixture["decoder"]["hidden_states"],
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(seen["refs"], fixture["decoder"]["references"],
                               rtol=1e-4, atol=1e-5)
    matching, _ = split_queries(outputs, denoising.meta.num_queries)
    stacked = QueryOutputs(*(torch.cat(p) for p in zip(matching, encoder_outputs)))
    match = model.bbox_head.match(stacked, images, targets)
    expected = fixture["assigned_gt_inds"].reshape(6, -1)  # (layers + encoder) x images, Q
    assert torch.equal(match.result.gt_index + 1, expected)


@pytest.mark.parametrize("mode", ["rescale", "no_rescale"])
def test_detections(model, fixture, mode):
    images, _ = inputs(fixture)
    model.eval()
    dets = model.predict(images, rescale=mode == "rescale")
    for ours, theirs in zip(dets, fixture["predictions"][mode]):
        assert len(ours) == len(theirs["scores"]) == 20
        torch.testing.assert_close(ours.scores, theirs["scores"], rtol=0, atol=1e-5)
        assert torch.equal(ours.labels, theirs["labels"])
        torch.testing.assert_close(ours.boxes, theirs["boxes"], rtol=0, atol=1e-3)


def test_gradients_follow_mmdetections_graph(model, fixture, monkeypatch):
    """The same gradients of the summed losses: where the references are detached (look
    forward twice), which proposals and queries get a gradient, reach every recorded path."""
    images, targets = inputs(fixture)
    replaying(model, fixture, monkeypatch)
    model.train()
    model.zero_grad()
    sum(model.loss(images, targets).values()).backward()
    params = dict(model.named_parameters())
    for key, expected in fixture["grads"].items():
        torch.testing.assert_close(params[key].grad, expected, rtol=1e-3, atol=1e-4 *
                                   float(expected.abs().max()), msg=key)
