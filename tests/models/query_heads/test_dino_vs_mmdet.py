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

from pathlib import Path

import pytest
import torch

from detcli.models.transformer.denoising import (
    CdnNoise,
    CdnQueryGenerator,
    DenoisingGroupConfig,
)
from detcli.structures.batch import DetTargets
from tests.fixtures.mmdet.dino_weights import dino_state_dict

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mmdet" / "dino.pt"
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
