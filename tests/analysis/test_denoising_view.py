"""DINO's denoising queries explained (detcli.analysis.denoising_view): a hand-built two-GT
image with its layout, noised boxes, labels, IoUs and attention-mask counts written out; the
seeded draws and stand-in; a model's predictions under a hand-set last box branch."""

from __future__ import annotations

import math

import pytest
import torch

from detcli.analysis.denoising_view import (
    checkpoint_predictions,
    denoising_generator,
    denoising_view,
    explain_denoising,
    seeded_noise,
)
from detcli.config.loader import load_config
from detcli.models.build import build_detector
from detcli.models.transformer.denoising import CdnNoise, CdnQueryGenerator, DenoisingGroupConfig
from detcli.structures.batch import ImageBatch

IMG = (100, 200)  # (h, w)
GT = torch.tensor([[20.0, 20.0, 60.0, 60.0], [100.0, 40.0, 180.0, 80.0]])  # 40x40, 80x40
LABELS = torch.tensor([0, 1])


def generator(**group) -> CdnQueryGenerator:
    cfg = DenoisingGroupConfig(**(group or {"dynamic": True, "num_dn_queries": 5}))
    return CdnQueryGenerator(num_classes=3, embed_dims=4, num_matching_queries=3,
                             label_noise_scale=0.5, box_noise_scale=1.0, group_cfg=cfg)


def hand_noise() -> CdnNoise:
    """(1, 2P = 4, G = 2) draws: copy r of slot j is query r * 2 + j (group r // 2, negative
    for odd r). Everything 'no noise' (label kept, part 0, sign +1) except: query 0 (r 0,
    GT0) moves each corner outwards by 0.5 of half the side; query 2 (r 1, GT0, negative)
    gets part (1.2, 1, 1, 1) and label 2 (draw 0.1 < 0.25); query 5 (r 2, GT1) moves x2 by
    0.9 of half the width and redraws its label as 1 -- the GT's own (draw 0.2)."""
    label_draw = torch.full((1, 4, 2), 0.9)
    new_labels = torch.zeros((1, 4, 2), dtype=torch.long)
    sign = torch.ones((1, 4, 2, 4))
    part = torch.zeros((1, 4, 2, 4))
    sign[0, 0, 0] = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    part[0, 0, 0] = 0.5
    label_draw[0, 1, 0], new_labels[0, 1, 0], part[0, 1, 0, 0] = 0.1, 2, 0.2
    label_draw[0, 2, 1], new_labels[0, 2, 1], part[0, 2, 1, 2] = 0.2, 1, 0.9
    return CdnNoise(label_draw, new_labels, sign, part)


def test_two_gts_two_groups_written_out():
    # P = max(5 // 2, 1) = 2 groups of 2G = 4: group 0 = dn0 (GT0 +), dn1 (GT1 +), dn2 (GT0 -),
    # dn3 (GT1 -); group 1 = dn4..dn7 likewise. D = 8.
    view = explain_denoising(generator(), GT, LABELS, IMG, hand_noise())
    assert (view.num_groups, view.num_gts, view.num_queries, view.num_matching) == (2, 2, 8, 3)
    assert view.group_rule == "dynamic: P = max(num_dn_queries // G, 1) = max(5 // 2, 1) = 2"
    table = [(q.index, q.group, q.role, q.gt_index) for q in view.queries]
    assert table == [(0, 0, "positive", 0), (1, 0, "positive", 1), (2, 0, "negative", 0),
                     (3, 0, "negative", 1), (4, 1, "positive", 0), (5, 1, "positive", 1),
                     (6, 1, "negative", 0), (7, 1, "negative", 1)]
    # a corner moves by part * sign * side * box_noise_scale / 2; a negative's part is 1 more
    # dn0: +-0.5 * 40 / 2 = 10 px -> [10, 10, 70, 70], IoU 1600 / 3600
    # dn1, dn4: no move. dn2: x1 + 1.2 * 20, the rest + 20 -> [44, 40, 80, 80]:
    #   inter [44, 40, 60, 60] 320, union 1600 + 1440 - 320 -> 2 / 17
    # dn3, dn7: GT1 + (40, 20, 40, 20) -> [140, 60, 220 -> 200 (clamped), 100]:
    #   inter 40 x 20 = 800, union 3200 + 2400 - 800 -> 1 / 6
    # dn5: x2 180 + 0.9 * 40 = 216 -> 200: [100, 40, 200, 80], IoU 3200 / 4000
    # dn6: GT0 + 20 -> [40, 40, 80, 80], inter 400, union 2800 -> 1 / 7
    boxes = [[10, 10, 70, 70], [100, 40, 180, 80], [44, 40, 80, 80], [140, 60, 200, 100],
             [20, 20, 60, 60], [100, 40, 200, 80], [40, 40, 80, 80], [140, 60, 200, 100]]
    for query, box in zip(view.queries, boxes):
        assert query.box == pytest.approx(box, abs=2e-3), query.index
    assert [q.iou for q in view.queries] == pytest.approx(
        [4 / 9, 1, 2 / 17, 1 / 6, 1, 0.8, 1 / 7, 1 / 6], abs=1e-4)
    # noise: the largest part (plus 1 for a negative) x box_noise_scale / 2, before clamping
    assert [q.noise for q in view.queries] == pytest.approx(
        [0.25, 0, 0.6, 0.5, 0, 0.45, 0.5, 0.5])
    assert [q.label for q in view.queries] == [0, 1, 2, 1, 0, 1, 0, 1]
    assert [q.label_flipped for q in view.queries] == [False, False, True] + [False] * 5
    assert all(q.pred_box is None and q.pred_iou is None for q in view.queries)
    gts = view.to_dict()["gts"]
    assert [(g["positive"], g["negative"]) for g in gts] == [([0, 4], [2, 6]), ([1, 5], [3, 7])]


def test_the_attention_mask_counted():
    # D + Q = 11; visible: a group's 4 x 4 (x 2 groups = 32), denoising -> matching 8 x 3 = 24,
    # matching -> matching 3 x 3 = 9; masked: matching -> denoising 3 x 8 = 24 and denoising
    # -> the other group 8 x 4 = 32
    att = explain_denoising(generator(), GT, LABELS, IMG, hand_noise()).attention
    assert att.to_dict() == {"size": 11, "masked": 56, "matching_sees_denoising": 0,
                             "denoising_sees_other_groups": 0, "denoising_sees_own_group": 32,
                             "denoising_sees_matching": 24, "matching_sees_matching": 9}


def test_predictions_give_each_query_its_iou_and_score():
    pred = GT[[0, 1, 0, 1, 0, 1, 0, 1]].clone()
    pred[0] = torch.tensor([20.0, 20.0, 40.0, 60.0])  # half of GT0
    view = explain_denoising(generator(), GT, LABELS, IMG, hand_noise(), pred,
                             torch.arange(8) / 10, "checkpoint", "a test's")
    assert [q.pred_iou for q in view.queries] == pytest.approx([0.5] + [1.0] * 7)
    assert [q.pred_score for q in view.queries] == pytest.approx([i / 10 for i in range(8)])
    assert view.queries[0].pred_box == [20.0, 20.0, 40.0, 60.0]


def test_static_groups_and_no_gt():
    static = explain_denoising(generator(dynamic=False, num_groups=3), GT, LABELS, IMG,
                               seeded_noise(generator(dynamic=False, num_groups=3), 2, 0))
    assert (static.num_groups, static.num_queries) == (3, 12)
    assert static.group_rule == "static: P = group_cfg.num_groups = 3"
    assert [q.index for q in static.of_gt(1) if q.negative] == [3, 7, 11]
    empty = denoising_view(generator(), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                           IMG, seed=0)
    assert (empty.num_groups, empty.num_queries, empty.queries) == (1, 0, [])
    assert empty.attention.size == 3 and empty.attention.masked == 0


def test_seeded_noise_and_stand_in_are_reproducible():
    gen = generator()
    first = denoising_view(gen, GT, LABELS, IMG, seed=7).to_dict()
    assert first == denoising_view(gen, GT, LABELS, IMG, seed=7).to_dict()
    assert first != denoising_view(gen, GT, LABELS, IMG, seed=8).to_dict()
    view = denoising_view(gen, GT, LABELS, IMG, seed=7)
    assert view.source == "stand_in" and "no --checkpoint" in view.source_text
    for q in view.queries:
        # positives move less than box_noise_scale / 2, negatives between that and the scale
        assert (0.5 <= q.noise < 1.0) if q.negative else (0.0 <= q.noise < 0.5)
        if q.negative:  # the stand-in keeps a negative's noised box
            assert q.pred_box == q.box
        else:
            assert 0 <= q.pred_box[0] <= q.pred_box[2] <= 200
            assert 0 <= q.pred_box[1] <= q.pred_box[3] <= 100


def test_a_models_denoising_predictions():
    """An untrained DINO's box branches end in zeros, so every decoder layer keeps a query's
    reference box; with the last layer's branch biased by (0, 0, ln 2, ln 2) its (cx, cy)
    stays and each side w (normalised) becomes sigmoid(logit(w) + ln 2) = 2w / (1 + w)."""
    cfg = load_config("dino_tiny_synth").cfg
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    last = cfg.model.decoder.num_layers - 1  # reg_branches[J] is the encoder's
    with torch.no_grad():
        model.bbox_head.reg_branches[last][-1].bias.copy_(torch.tensor([0, 0, math.log(2),
                                                                        math.log(2)]))
    img = (60, 60)
    gt = torch.tensor([[10.0, 20.0, 30.0, 50.0], [30.0, 5.0, 55.0, 40.0]])
    gen = denoising_generator(cfg.model)
    noise = seeded_noise(gen, 2, 0)
    images = ImageBatch(tensor=torch.randn(1, 3, 64, 64), img_shapes=[img], ori_shapes=[img],
                        scale_factors=[(1.0, 1.0)])
    boxes, scores = checkpoint_predictions(model, images, gt, LABELS, noise)
    view = explain_denoising(gen, gt, LABELS, img, noise, boxes, scores)
    assert view.num_queries == 40 and boxes.shape == (40, 4) and scores.shape == (40,)
    ref = torch.tensor([q.box for q in view.queries]) / 60.0  # (D, 4) normalised
    centre, side = (ref[:, :2] + ref[:, 2:]) / 2, ref[:, 2:] - ref[:, :2]
    side = 2 * side / (1 + side)
    expected = torch.cat([centre - side / 2, centre + side / 2], 1) * 60.0
    assert torch.allclose(boxes, expected, atol=5e-3)
    assert ((scores > 0) & (scores < 1)).all()
