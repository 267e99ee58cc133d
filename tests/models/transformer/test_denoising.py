"""DINO's contrastive denoising queries: the mask written out, the query layout, the noise
bounds, hand-computed noisy queries, and the seeded draws (reproducible and resumable)."""

from __future__ import annotations

import random

import pytest
import torch
from pydantic import ValidationError

from detcli.models.transformer.denoising import (
    CdnNoise,
    CdnQueryGenerator,
    CdnQueryGeneratorConfig,
    DenoisingGroupConfig,
    DenoisingMeta,
)


def generator(num_dn_queries: int = 4, num_matching: int = 3, num_classes: int = 5,
              **kw) -> CdnQueryGenerator:
    return CdnQueryGenerator(num_classes=num_classes, embed_dims=2,
                             num_matching_queries=num_matching,
                             group_cfg=DenoisingGroupConfig(num_dn_queries=num_dn_queries), **kw)


def quiet_noise(num_images: int, copies: int, slots: int, part: float = 0.0) -> CdnNoise:
    """No label replaced, every box coordinate moved by +part (times the box size / 2)."""
    return CdnNoise(label_draw=torch.ones(num_images, copies, slots),
                    new_labels=torch.zeros(num_images, copies, slots, dtype=torch.long),
                    box_sign=torch.ones(num_images, copies, slots, 4),
                    box_part=torch.full((num_images, copies, slots, 4), part))


def test_mask_for_two_gt_and_two_groups_written_out():
    # G = 2, num_dn_queries 4 -> P = 2 groups of 2G = 4 queries (D = 8), Q = 3 matching
    gen = generator(num_dn_queries=4, num_matching=3)
    mask = gen.attention_mask(DenoisingMeta(num_groups=gen.num_groups(2), num_slots=2), "cpu")
    expected = [
        "00001111000",  # group 0 (positives of GT 0, 1, negatives of GT 0, 1): sees group 0
        "00001111000",  # and the matching queries
        "00001111000",
        "00001111000",
        "11110000000",  # group 1 sees itself and the matching queries
        "11110000000",
        "11110000000",
        "11110000000",
        "11111111000",  # the matching queries see no denoising query
        "11111111000",
        "11111111000",
    ]
    assert mask.tolist() == [[c == "1" for c in row] for row in expected]


def test_group_count_dynamic_and_static():
    gen = generator(num_dn_queries=100)
    assert [gen.num_groups(g) for g in (0, 1, 3, 100, 101, 250)] == [1, 100, 33, 1, 1, 1]
    static = CdnQueryGenerator(num_classes=2, embed_dims=2, num_matching_queries=1,
                               group_cfg=DenoisingGroupConfig(dynamic=False, num_groups=5))
    assert static.num_groups(40) == 5
    with pytest.raises(ValidationError, match="needs num_groups"):
        DenoisingGroupConfig(dynamic=False)
    with pytest.raises(ValidationError, match="needs num_dn_queries"):
        DenoisingGroupConfig(num_dn_queries=False)
    with pytest.raises(ValidationError, match="greater than 0"):
        CdnQueryGeneratorConfig(box_noise_scale=0)


def test_query_layout_with_a_padding_slot():
    # image 0 has one GT (slot 1 is padding), image 1 two; G = 2, P = 2, D = 8
    gen = generator(num_dn_queries=4)
    with torch.no_grad():
        gen.label_embedding.weight.copy_(torch.arange(10.0).reshape(5, 2) + 1)  # class k: 2k+1, 2k+2
    boxes = torch.tensor([[[0.0, 0.0, 50.0, 50.0], [0.0, 0.0, 0.0, 0.0]],
                          [[0.0, 0.0, 100.0, 100.0], [50.0, 50.0, 100.0, 100.0]]])
    labels = torch.tensor([[3, -1], [1, 4]])
    shapes = torch.tensor([[100, 100], [100, 100]])
    out = gen(boxes, labels, shapes, noise=quiet_noise(2, 4, 2))
    assert out.meta == DenoisingMeta(num_groups=2, num_slots=2) and out.meta.num_queries == 8
    assert out.label_query.shape == (2, 8, 2) and out.bbox_query.shape == (2, 8, 4)
    # image 0: queries 0, 2, 4, 6 are copies of its GT (class 3), 1, 3, 5, 7 all zero
    assert out.label_query[0, :, 0].tolist() == [7, 0, 7, 0, 7, 0, 7, 0]
    assert out.bbox_query[0, 1::2].abs().sum() == 0
    # image 1: positive and negative copy of GT 0 (class 1), GT 1 (class 4), in both groups
    assert out.label_query[1, :, 0].tolist() == [3, 9, 3, 9, 3, 9, 3, 9]
    group, negative, slot = out.meta.layout()
    assert group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert negative.tolist() == [False, False, True, True] * 2
    assert slot.tolist() == [0, 1] * 4
    # zero noise: every copy's box is its GT's, (cx, cy, w, h) as logits
    torch.testing.assert_close(out.bbox_query[1, 0].sigmoid(), torch.tensor([0.5, 0.5, 1.0, 1.0]),
                               atol=1e-3, rtol=0)  # w = 1 clamps to 1 - 1e-3
    torch.testing.assert_close(out.bbox_query[0, 0].sigmoid(),
                               torch.tensor([0.25, 0.25, 0.5, 0.5]))


def test_hand_computed_noisy_box_and_label():
    # GT (20, 40, 60, 120) in a 200 x 200 image: normalised (0.1, 0.2, 0.3, 0.6), w 0.2, h 0.4
    gen = generator(num_dn_queries=1, num_classes=5)  # G = 1 -> one group: a positive, a negative
    noise = quiet_noise(1, 2, 1)
    noise.box_part[0, :, 0] = torch.tensor([0.5, 0.0, 0.25, 0.5])  # both copies
    noise.box_sign[0, :, 0] = torch.tensor([1.0, -1.0, 1.0, 1.0])
    noise.label_draw[0, :, 0] = torch.tensor([0.3, 0.2])  # below 0.5 / 2 = 0.25: replaced
    noise.new_labels[0, :, 0] = torch.tensor([4, 2])
    with torch.no_grad():
        gen.label_embedding.weight.copy_(torch.arange(5.0)[:, None].repeat(1, 2))
    out = gen(torch.tensor([[[20.0, 40.0, 60.0, 120.0]]]), torch.tensor([[1]]),
              torch.tensor([[200, 200]]), noise=noise)
    # positive: x1 + 0.5 * 0.2 / 2, y1 - 0, x2 + 0.25 * 0.2 / 2, y2 + 0.5 * 0.4 / 2
    pos = torch.tensor([0.15, 0.2, 0.325, 0.7])
    # negative: part + 1 -> x1 + 1.5 * 0.1, y1 - 1 * 0.2, x2 + 1.25 * 0.1, y2 + 1.5 * 0.2
    neg = torch.tensor([0.25, 0.0, 0.425, 0.9])
    for query, xyxy in zip(out.bbox_query[0], (pos, neg)):
        cxcywh = torch.stack([(xyxy[0] + xyxy[2]) / 2, (xyxy[1] + xyxy[3]) / 2,
                              xyxy[2] - xyxy[0], xyxy[3] - xyxy[1]])
        expected = torch.log(cxcywh.clamp(min=1e-3) / (1 - cxcywh).clamp(min=1e-3))
        torch.testing.assert_close(query, expected)
    assert out.label_query[0, :, 0].tolist() == [1.0, 2.0]  # kept class 1; replaced by 2


def test_drawn_noise_stays_within_the_positive_and_negative_bounds():
    # a box far from the image border (no clamping): 0.4..0.6 of a 100 x 100 image
    gen = generator(num_dn_queries=200)  # G = 1 -> 200 groups
    random.seed(0)
    out = gen(torch.tensor([[[40.0, 40.0, 60.0, 60.0]]]), torch.tensor([[2]]),
              torch.tensor([[100, 100]]))
    cx, cy, w, h = out.bbox_query[0].sigmoid().unbind(-1)  # (D,)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    shift = (xyxy - torch.tensor([0.4, 0.4, 0.6, 0.6])).abs() / 0.2  # in units of w = h
    _, negative, _ = out.meta.layout()
    # a copy whose corners crossed or met (x1 >= x2) has w clamped to 1e-3 by the logit:
    # its corners are not recoverable; the others are (most of them)
    kept = (w > 0.01) & (h > 0.01)
    assert kept[~negative].float().mean() > 0.9 and kept[negative].float().mean() > 0.5
    shift, negative = shift[kept], negative[kept]
    eps = 1e-4
    assert shift[~negative].max() < 0.5 + eps  # positives: corners within half the size
    assert shift[negative].min() > 0.5 - eps and shift[negative].max() < 1.0 + eps
    assert shift[~negative].max() > 0.4 and shift[negative].max() > 0.9  # the range is used
    # labels: about a quarter of the 400 copies drew a replacement (p = 0.25, binomial)
    replaced = (out.label_query[0] != gen.label_embedding.weight[2]).any(-1).float().mean()
    assert 0.1 < replaced < 0.3


def test_draws_follow_pythons_random_so_a_resumed_run_repeats_them():
    gen = generator()
    args = (torch.tensor([[[10.0, 10.0, 50.0, 60.0]]]), torch.tensor([[1]]),
            torch.tensor([[100, 100]]))
    random.seed(7)
    first = gen(*args).bbox_query
    state = random.getstate()  # what a checkpoint saves (engine/seed.py rng_state)
    second = gen(*args).bbox_query
    random.setstate(state)  # what resume restores
    assert torch.equal(gen(*args).bbox_query, second)
    assert not torch.equal(first, second)
    random.seed(7)
    assert torch.equal(gen(*args).bbox_query, first)
