"""generate_proposals: hand-computed cases for each rule, and a per-image reference on random input.

The basic level: stride 16, a 2x2 map, one anchor per location, in layout order (y, x):
  r0 [0, 0, 16, 16]   r1 [16, 0, 32, 16]   r2 [0, 16, 16, 32]   r3 [16, 16, 32, 32]
(no two overlap). Objectness logits [[0, 2], [-1, 1]] give r0 0.5, r1 sigmoid(2) = 0.8808,
r2 sigmoid(-1) = 0.2689, r3 sigmoid(1) = 0.7311, so the order is r1, r3, r0, r2.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detcli.models.dense_heads.proposals import generate_proposals
from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoder
from detcli.task.postprocess import NMSConfig
from detcli.task.prior_generators.anchor_generator import AnchorGenerator
from detcli.task.two_stage_cfg import ProposalConfig

CODER = DeltaXYWHBBoxCoder()
CELLS = torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32]])
HALF = math.log(0.5)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def cells_logits(num_images: int = 1) -> torch.Tensor:
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])  # (H, W): r0 r1 / r2 r3
    return logits.expand(num_images, 1, 2, 2).clone()  # (N, A=1, H, W)


def shapes(*hw: tuple[int, int]) -> torch.Tensor:
    return torch.tensor(hw, dtype=torch.float32)  # (N, 2)


def test_one_level_exact_boxes_order_scores_and_padding() -> None:
    logits = cells_logits().requires_grad_(True)
    deltas = torch.zeros(1, 4, 2, 2)  # (N, A*4, H, W)
    deltas[0, 2:, 0, 0] = HALF  # r0: half the width and height, same centre (8, 8)
    deltas[0, 0, 1, 1] = 0.25  # r3: centre moves 0.25 * 16 = 4 px right, past the image edge
    cfg = ProposalConfig(nms_pre=1000, max_per_img=6)
    props = generate_proposals([logits], [deltas], [CELLS], CODER, shapes((32, 32)), cfg)
    assert props.boxes.shape == (1, 6, 4) and props.scores.shape == (1, 6)
    expected = [[16, 0, 32, 16],  # r1
                [20, 16, 32, 32],  # r3 [20, 16, 36, 32] clipped to x <= 32
                [4, 4, 12, 12],  # r0
                [0, 16, 16, 32]]  # r2
    torch.testing.assert_close(props.boxes[0, :4], torch.tensor(expected, dtype=torch.float32))
    torch.testing.assert_close(props.scores[0, :4],
                               torch.tensor([sigmoid(2), sigmoid(1), 0.5, sigmoid(-1)]))
    assert props.valid.tolist() == [[True] * 4 + [False] * 2]  # fewer candidates than slots
    assert props.num_valid.tolist() == [4]
    assert props.boxes[0, 4:].eq(0).all() and props.scores[0, 4:].eq(0).all()
    assert props.boxes.dtype == torch.float32 and not props.boxes.requires_grad
    assert not props.scores.requires_grad  # proposals are never differentiated

    # bf16 outputs (AMP) give float32 proposals in the same order
    half = generate_proposals([logits.bfloat16()], [deltas.bfloat16()], [CELLS], CODER,
                              shapes((32, 32)), cfg)
    assert half.boxes.dtype == torch.float32 and half.scores.dtype == torch.float32
    torch.testing.assert_close(half.boxes, props.boxes, atol=0.05, rtol=0)


def test_nms_pre_is_per_level() -> None:
    far = torch.tensor([[32.0, 32, 64, 64]])  # level 1: one anchor, logit -3 (0.0474)
    logits = [cells_logits(), torch.full((1, 1, 1, 1), -3.0)]
    deltas = [torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 1, 1)]
    priors = [CELLS, far]
    img = shapes((64, 64))
    props = generate_proposals(logits, deltas, priors, CODER, img, ProposalConfig(nms_pre=2))
    # level 0 keeps its 2 best (r1, r3); level 1 keeps min(2, 1) = 1, although r0 (0.5) and
    # r2 (0.27) of level 0 score higher than it
    assert props.num_valid.tolist() == [3]
    torch.testing.assert_close(props.boxes[0, :3], torch.stack([CELLS[1], CELLS[3], far[0]]))
    torch.testing.assert_close(props.scores[0, :3],
                               torch.tensor([sigmoid(2), sigmoid(1), sigmoid(-3)]))
    for every in (-1, 0):  # nms_pre <= 0: every anchor of every level
        props = generate_proposals(logits, deltas, priors, CODER, img,
                                   ProposalConfig(nms_pre=every))
        assert props.num_valid.tolist() == [5]
        torch.testing.assert_close(props.scores[0, :5], torch.tensor(
            [sigmoid(2), sigmoid(1), 0.5, sigmoid(-1), sigmoid(-3)]))


def test_nms_runs_within_each_level_only() -> None:
    # level 0: [0, 0, 16, 16] (logit 2) and [1, 0, 17, 16] (logit 1), IoU 15*16 / (17*16) = 0.88
    # level 1: [0, 0, 16, 16] again (logit 0), IoU 1 with level 0's first box
    logits = [torch.tensor([[[[2.0, 1.0]]]]), torch.zeros(1, 1, 1, 1)]
    deltas = [torch.zeros(1, 4, 1, 2), torch.zeros(1, 4, 1, 1)]
    priors = [torch.tensor([[0.0, 0, 16, 16], [1, 0, 17, 16]]), torch.tensor([[0.0, 0, 16, 16]])]
    props = generate_proposals(logits, deltas, priors, CODER, shapes((32, 32)), ProposalConfig())
    assert props.num_valid.tolist() == [2]  # the 0.88 overlap of level 0 is suppressed (> 0.7)
    torch.testing.assert_close(props.boxes[0, :2], torch.tensor([[0.0, 0, 16, 16]] * 2))
    torch.testing.assert_close(props.scores[0, :2], torch.tensor([sigmoid(2), 0.5]))
    # a looser threshold keeps the overlap; class_agnostic lets the levels suppress each other
    loose = ProposalConfig(nms=NMSConfig(iou_threshold=0.9))
    assert generate_proposals(logits, deltas, priors, CODER, shapes((32, 32)),
                              loose).num_valid.tolist() == [3]
    across = ProposalConfig(nms=NMSConfig(iou_threshold=0.7, class_agnostic=True))
    assert generate_proposals(logits, deltas, priors, CODER, shapes((32, 32)),
                              across).num_valid.tolist() == [1]


def test_min_bbox_size_masks_thin_boxes() -> None:
    # three 16 x 16 anchors side by side; a0 decodes 1 px wide, a1 1 px high (exp(log 1/16) * 16)
    priors = torch.tensor([[0.0, 0, 16, 16], [16, 0, 32, 16], [32, 0, 48, 16]])
    logits = torch.tensor([[[[3.0, 2.0, 1.0]]]])  # (1, 1, 1, 3)
    deltas = torch.zeros(1, 4, 1, 3)
    deltas[0, 2, 0, 0] = math.log(1 / 16)  # a0: [7.5, 0, 8.5, 16]
    deltas[0, 3, 0, 1] = math.log(1 / 16)  # a1: [16, 7.5, 32, 8.5]
    img = shapes((16, 48))
    props = generate_proposals([logits], [deltas], [priors], CODER, img,
                               ProposalConfig(min_bbox_size=2))
    assert props.num_valid.tolist() == [1]
    torch.testing.assert_close(props.boxes[0, 0], priors[2])
    assert props.scores[0, 0].item() == pytest.approx(sigmoid(1))
    kept = generate_proposals([logits], [deltas], [priors], CODER, img, ProposalConfig())
    assert kept.num_valid.tolist() == [3]
    torch.testing.assert_close(kept.boxes[0, :2], torch.tensor([[7.5, 0, 8.5, 16],
                                                                [16, 7.5, 32, 8.5]]))


def test_clipping_uses_each_images_own_shape() -> None:
    prior = torch.tensor([[-8.0, -8, 40, 40]])  # a 1x1 map whose anchor overhangs every side
    logits = torch.zeros(2, 1, 1, 1)
    deltas = torch.zeros(2, 4, 1, 1)
    props = generate_proposals([logits], [deltas], [prior], CODER, shapes((32, 24), (20, 36)),
                               ProposalConfig(max_per_img=2))
    # clipped to x in [0, w], y in [0, h] of each image: (h, w) = (32, 24), then (20, 36)
    torch.testing.assert_close(props.boxes[:, 0], torch.tensor([[0.0, 0, 24, 32], [0, 0, 36, 20]]))
    assert props.valid.tolist() == [[True, False], [True, False]]


def test_max_per_img_caps_and_pads_each_image() -> None:
    """Three images over one 2x3 map of 16 x 16 cells (no overlap), logits 0..5 in layout order.

    Image 0 has 6 candidates for 4 slots; image 1 keeps 2 (the rest are made 1 px wide); image 2
    keeps none (all thin)."""
    ys, xs = torch.meshgrid(torch.arange(2.0), torch.arange(3.0), indexing="ij")
    priors = torch.stack([xs * 16, ys * 16, xs * 16 + 16, ys * 16 + 16], -1).reshape(6, 4)
    logits = torch.arange(6.0).reshape(1, 1, 2, 3).repeat(3, 1, 1, 1)  # (3, 1, 2, 3)
    deltas = torch.zeros(3, 4, 2, 3)
    deltas[1, 2] = math.log(1 / 16)  # image 1: every box 1 px wide ...
    deltas[1, 2, 0, 0] = deltas[1, 2, 1, 1] = 0.0  # ... but anchors 0 (logit 0) and 4 (logit 4)
    deltas[2, 2] = math.log(1 / 16)
    props = generate_proposals([logits], [deltas], [priors], CODER,
                               shapes((32, 48), (32, 48), (32, 48)),
                               ProposalConfig(max_per_img=4, min_bbox_size=2))
    assert props.boxes.shape == (3, 4, 4)
    assert props.num_valid.tolist() == [4, 2, 0]
    torch.testing.assert_close(props.scores[0], torch.tensor([sigmoid(v) for v in (5, 4, 3, 2)]))
    torch.testing.assert_close(props.boxes[0], priors[[5, 4, 3, 2]])
    torch.testing.assert_close(props.boxes[1, :2], priors[[4, 0]])
    torch.testing.assert_close(props.scores[1, :2], torch.tensor([sigmoid(4), 0.5]))
    assert props.valid.tolist() == [[True] * 4, [True, True, False, False], [False] * 4]
    assert props.boxes[1, 2:].eq(0).all() and props.scores[1, 2:].eq(0).all()
    assert props.boxes[2].eq(0).all() and props.scores[2].eq(0).all()


def reference_proposals(logits, deltas, priors, img_shapes, cfg):
    """Image by image, level by level, as MMDetection 2.x's RPNHead writes it."""
    results = []
    for i in range(logits[0].shape[0]):
        boxes, scores, ids = [], [], []
        for level, (lg, dl, anchors) in enumerate(zip(logits, deltas, priors)):
            s = lg[i].permute(1, 2, 0).reshape(-1).sigmoid()  # (H*W*A,)
            d = dl[i].permute(1, 2, 0).reshape(-1, 4)  # (H*W*A, 4)
            if 0 < cfg.nms_pre < s.numel():
                s, order = s.sort(descending=True)
                top = order[: cfg.nms_pre]
                s, d, anchors = s[: cfg.nms_pre], d[top], anchors[top]
            h, w = img_shapes[i].tolist()
            boxes.append(CODER.decode(anchors, d, max_shape=(int(h), int(w))))
            scores.append(s)
            ids.append(torch.full((s.numel(),), level))
        b, s, c = torch.cat(boxes), torch.cat(scores), torch.cat(ids)
        sized = (b[:, 2] - b[:, 0] > cfg.min_bbox_size) & (b[:, 3] - b[:, 1] > cfg.min_bbox_size)
        b, s, c = b[sized], s[sized], c[sized]
        keep = torchvision.ops.batched_nms(b, s, c, cfg.nms.iou_threshold)[: cfg.max_per_img]
        results.append((b[keep], s[keep]))
    return results


def test_batched_proposals_equal_a_per_image_reference() -> None:
    torch.manual_seed(0)
    generator = AnchorGenerator(strides=[8, 16, 32], ratios=[0.5, 1.0, 2.0], scales=[4.0])
    sizes = [(8, 8), (4, 4), (2, 2)]  # a 64 x 64 input; R_l = 192, 48, 12
    priors = generator.grid_priors(sizes)
    logits = [torch.randn(2, 3, h, w) * 2 for h, w in sizes]
    deltas = [torch.randn(2, 12, h, w) * 0.5 for h, w in sizes]
    img_shapes = shapes((64, 64), (48, 56))
    cfg = ProposalConfig(nms_pre=40, max_per_img=60, min_bbox_size=4,
                         nms=NMSConfig(iou_threshold=0.6))
    props = generate_proposals(logits, deltas, priors, CODER, img_shapes, cfg)
    expected = reference_proposals(logits, deltas, priors, img_shapes, cfg)
    assert props.num_valid.tolist() == [len(b) for b, _ in expected]
    assert 20 < props.num_valid.min() and props.num_valid.max() < 40 + 40 + 12  # NMS removed some
    for i, (boxes, scores) in enumerate(expected):
        n = len(boxes)
        torch.testing.assert_close(props.boxes[i, :n], boxes, atol=1e-4, rtol=0)
        torch.testing.assert_close(props.scores[i, :n], scores)
        assert props.boxes[i, n:].eq(0).all() and not props.valid[i, n:].any()

    capped = ProposalConfig(nms_pre=40, max_per_img=15, min_bbox_size=4,
                            nms=NMSConfig(iou_threshold=0.6))
    props = generate_proposals(logits, deltas, priors, CODER, img_shapes, capped)
    assert props.num_valid.tolist() == [15, 15]
    for i, (boxes, scores) in enumerate(expected):  # the 15 best of the uncapped result
        torch.testing.assert_close(props.boxes[i], boxes[:15], atol=1e-4, rtol=0)
        torch.testing.assert_close(props.scores[i], scores[:15])
