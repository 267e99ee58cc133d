"""RetinaHead: layers and init, targets and loss on a written-out case, empty GT, prediction.

The hand-made case: one level of stride 16, a 2x2 feature map, one anchor per location
(scale 1, ratio 1, centre offset 0.5), so the anchors are, in layout order (y, x):
  r0 [0, 0, 16, 16]   r1 [16, 0, 32, 16]   r2 [0, 16, 16, 32]   r3 [16, 16, 32, 32]
and one GT [2, 2, 18, 22] (centre (10, 12), size 16 x 20) of class 1, K = 3 classes.
IoUs: r0 196/380 = 0.516, r1 28/548 = 0.051, r2 84/492 = 0.171, r3 12/564 = 0.021.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detcli.models.dense_heads import DenseOutputs, RetinaHead
from detcli.models.dense_heads.anchor_head import flatten_levels
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.task.assigners.max_iou import MaxIoUAssignerConfig
from detcli.task.postprocess import DenseTestConfig
from detcli.task.prior_generators.anchor_generator import AnchorGenerator
from detcli.task.train_cfg import DenseTrainConfig

LN2 = math.log(2.0)
FOCAL_POS = 0.25 * 0.5**2 * LN2  # alpha * (1 - p)^2 * -log(p) at p = 0.5
FOCAL_NEG = 0.75 * 0.5**2 * LN2  # (1 - alpha) * p^2 * -log(1 - p) at p = 0.5
GT_DELTAS = [2 / 16, 4 / 16, 0.0, math.log(20 / 16)]  # r0 -> GT: dx, dy, dw, dh


def toy_head(neg_iou_thr: float = 0.4, **test_cfg: object) -> RetinaHead:
    anchors = AnchorGenerator(strides=[16], ratios=[1.0], scales=[1.0], center_offset=0.5)
    assigner = MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=neg_iou_thr)
    train_cfg = DenseTrainConfig(assigner=assigner)
    return RetinaHead(num_classes=3, in_channels=4, stacked_convs=1, feat_channels=4,
                      prior_generator=anchors, train_cfg=train_cfg,
                      test_cfg=DenseTestConfig(**test_cfg))


def toy_outputs(num_images: int, deltas_r0: list[float]) -> DenseOutputs:
    """Logits all 0 (p = 0.5); deltas of r0 as given, and 5.0 on every other anchor."""
    logits = torch.zeros(num_images, 3, 2, 2, requires_grad=True)  # (N, A*K, H, W), A = 1
    deltas = torch.full((num_images, 4, 2, 2), 5.0)  # (N, A*4, H, W)
    deltas[:, :, 0, 0] = torch.tensor(deltas_r0)
    deltas.requires_grad_(True)
    return DenseOutputs([logits], [deltas])


def toy_batch(num_images: int) -> tuple[ImageBatch, DetTargets]:
    images = ImageBatch.from_tensor(torch.zeros(num_images, 3, 32, 32))
    boxes = [torch.tensor([[2.0, 2.0, 18.0, 22.0]])] + [torch.zeros(0, 4)] * (num_images - 1)
    labels = [torch.tensor([1])] + [torch.zeros(0, dtype=torch.long)] * (num_images - 1)
    return images, DetTargets.from_lists(boxes, labels)


def test_forward_shapes_names_and_init() -> None:
    head = RetinaHead(num_classes=3, in_channels=8, feat_channels=16)
    feats = [torch.randn(2, 8, s, s) for s in (16, 8, 4, 2, 1)]
    out = head(feats)
    assert [tuple(x.shape) for x in out.cls_logits] == [(2, 27, s, s) for s in (16, 8, 4, 2, 1)]
    assert [tuple(x.shape) for x in out.bbox_deltas] == [(2, 36, s, s) for s in (16, 8, 4, 2, 1)]
    keys = set(head.state_dict())
    assert {"cls_convs.3.conv.weight", "reg_convs.0.conv.bias", "retina_cls.weight",
            "retina_reg.bias"} <= keys
    assert len(keys) == 2 * 4 * 2 + 4  # 4 stacked convs per tower (weight, bias), 2 outputs
    # every class starts at probability 0.01: bias = -log(0.99 / 0.01)
    assert torch.allclose(head.retina_cls.bias, torch.full((27,), -4.59511985))
    assert torch.all(head.reg_convs[0].conv.bias == 0)
    assert 0.005 < head.cls_convs[0].conv.weight.std().item() < 0.015  # N(0, 0.01)


def test_flatten_levels_follows_anchor_layout() -> None:
    # level 0: A = 2, C = 1 on a 1x2 map: channel a at (y, x) -> row (y * W + x) * A + a
    level0 = torch.tensor([[[[0.0, 2.0]], [[1.0, 3.0]]]])  # (1, A*C=2, H=1, W=2)
    level1 = torch.tensor([[[[4.0]], [[5.0]]]])  # (1, 2, 1, 1)
    assert flatten_levels([level0, level1], 1).flatten().tolist() == [0, 1, 2, 3, 4, 5]


def test_targets_on_written_out_case() -> None:
    head = toy_head(neg_iou_thr=0.15)  # r2 (IoU 0.171) falls between the thresholds: ignored
    images, targets = toy_batch(1)
    priors = torch.cat(head.prior_generator.grid_priors([(2, 2)]))
    assert priors.tolist() == [[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32]]
    tgt = head.get_targets(priors, [(2, 2)], images, targets)
    assert tgt.labels.tolist() == [[1, 3, 3, 3]]  # background is K = 3
    assert tgt.label_weights.tolist() == [[1, 1, 0, 1]]
    assert tgt.bbox_weights.tolist() == [[1, 0, 0, 0]]
    assert torch.allclose(tgt.bbox_targets[0, 0], torch.tensor(GT_DELTAS))
    assert torch.all(tgt.bbox_targets[0, 1:] == 0)
    assert tgt.num_pos.tolist() == [1] and tgt.avg_factor.item() == 1.0


def test_anchors_off_the_image_take_no_part() -> None:
    """MMDetection's valid flags (the image's own padded size) and allowed_border."""
    head = toy_head()
    _, targets = toy_batch(1)
    # padded to 32x32 by the batch: row y=1 is off the image's own padded area
    images = ImageBatch(tensor=torch.zeros(1, 3, 32, 32), img_shapes=[(16, 32)],
                        ori_shapes=[(16, 32)], scale_factors=torch.ones(1, 4),
                        metas=[{"pad_shape": (16, 32, 3)}])
    assert images.pad_shapes.tolist() == [[16, 32]] and not images.fills_batch
    priors = torch.cat(head.prior_generator.grid_priors([(2, 2)]))
    tgt = head.get_targets(priors, [(2, 2)], images, targets)
    assert tgt.label_weights.tolist() == [[1, 1, 0, 0]]
    assert tgt.labels.tolist() == [[1, 3, 3, 3]]

    head.train_cfg = head.train_cfg.model_copy(update={"allowed_border": 0})
    images = ImageBatch(tensor=torch.zeros(1, 3, 32, 32), img_shapes=[(32, 24)],
                        ori_shapes=[(32, 24)], scale_factors=torch.ones(1, 4))  # r1, r3: x 32 > 24
    tgt = head.get_targets(priors, [(2, 2)], images, targets)
    assert tgt.label_weights.tolist() == [[1, 0, 0, 0]]  # r2: y2 = 32 is not < 32 + 0
    head.train_cfg = head.train_cfg.model_copy(update={"allowed_border": 1})
    tgt = head.get_targets(priors, [(2, 2)], images, targets)
    assert tgt.label_weights.tolist() == [[1, 0, 1, 0]]  # r2: 32 < 33; r1, r3: 32 >= 25


def test_loss_on_written_out_case() -> None:
    head = toy_head(neg_iou_thr=0.15)
    images, targets = toy_batch(1)
    outputs = toy_outputs(1, [0.1, 0.2, 0.3, -0.1])
    losses = head.loss(outputs, images, targets)
    # one positive: |0.1 - 0.125| + |0.2 - 0.25| + |0.3 - 0| + |-0.1 - log 1.25|, over 1 positive
    expected_bbox = 0.025 + 0.05 + 0.3 + (0.1 + math.log(1.25))
    assert losses["loss_bbox"].item() == pytest.approx(expected_bbox, abs=1e-6)
    # r0: its class 1 positive, 2 classes negative; r1, r3: 3 negatives each; r2 ignored
    expected_cls = FOCAL_POS + 8 * FOCAL_NEG
    assert losses["loss_cls"].item() == pytest.approx(expected_cls, abs=1e-6)
    weights = torch.tensor([1.0, 1.0, 0.0, 1.0])[:, None]
    binary = torch.tensor([[0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]], dtype=torch.float32)
    reference = torchvision.ops.sigmoid_focal_loss(torch.zeros(4, 3), binary, reduction="none")
    assert losses["loss_cls"].item() == pytest.approx((reference * weights).sum().item(), abs=1e-6)


def test_avg_factor_counts_an_image_without_gt_as_one() -> None:
    """MMDetection 2.x divides by sum over images of max(num_pos, 1)."""
    head = toy_head()  # neg_iou_thr 0.4: every anchor but r0 is negative
    images, targets = toy_batch(2)
    losses = head.loss(toy_outputs(2, [0.0, 0.0, 0.0, 0.0]), images, targets)
    assert losses["loss_bbox"].item() == pytest.approx(sum(abs(d) for d in GT_DELTAS) / 2, abs=1e-6)
    expected_cls = (FOCAL_POS + 2 * FOCAL_NEG) + 3 * 3 * FOCAL_NEG + 4 * 3 * FOCAL_NEG
    assert losses["loss_cls"].item() == pytest.approx(expected_cls / 2, abs=1e-6)


@pytest.mark.parametrize("num_with_gt", [1, 0])
def test_images_without_gt_give_finite_loss_with_grad(num_with_gt: int) -> None:
    torch.manual_seed(0)
    head = RetinaHead(num_classes=3, in_channels=4, stacked_convs=1, feat_channels=4,
                      train_cfg=DenseTrainConfig())
    feats = [torch.randn(2, 4, s, s) for s in (8, 4, 2, 1, 1)]
    num_empty = 2 - num_with_gt
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 48.0]])] * num_with_gt + [torch.zeros(0, 4)] * num_empty
    labels = [torch.tensor([2])] * num_with_gt + [torch.zeros(0, dtype=torch.long)] * num_empty
    images = ImageBatch.from_tensor(torch.zeros(2, 3, 64, 64))
    losses = head.loss(head(feats), images, DetTargets.from_lists(boxes, labels))
    total = losses["loss_cls"] + losses["loss_bbox"]
    assert torch.isfinite(total)
    total.backward()
    assert head.retina_reg.weight.grad is not None
    assert head.retina_cls.weight.grad.abs().sum() > 0
    if num_with_gt == 0:
        assert losses["loss_bbox"].item() == 0.0


def test_predict_rescales_to_original_pixels_and_clips() -> None:
    head = toy_head(score_thr=0.5)
    logits = torch.full((1, 3, 2, 2), -10.0)
    logits[0, 2, 1, 1] = 5.0  # r3, class 2
    outputs = DenseOutputs([logits], [torch.zeros(1, 4, 2, 2)])
    images = ImageBatch(tensor=torch.zeros(1, 3, 32, 32), img_shapes=[(32, 24)],
                        ori_shapes=[(64, 12)], scale_factors=torch.tensor([[2.0, 0.5, 2.0, 0.5]]))
    raw = head.predict(outputs, images, rescale=False)
    # r3 [16, 16, 32, 32] clipped to the 24-pixel-wide image
    assert raw.boxes[0, 0].tolist() == [16.0, 16.0, 24.0, 32.0]
    out = head.predict(outputs, images)
    assert out.num_dets.tolist() == [1]
    assert out.boxes[0, 0].tolist() == [8.0, 32.0, 12.0, 64.0]  # x / 2, y / 0.5
    assert out.scores[0, 0].item() == pytest.approx(1 / (1 + math.exp(-5.0)))
    assert out.labels[0, 0].item() == 2
    assert out.labels[0, 1:].eq(-1).all() and out.scores[0, 1:].eq(0).all()


def reference_predict(head: RetinaHead, outputs: DenseOutputs, images: ImageBatch):
    """Image by image, level by level, as MMDetection 2.x writes it: sort, decode, NMS."""
    cfg = head.test_cfg
    priors = head.level_priors(outputs)
    results = []
    for i in range(len(images)):
        boxes, scores, labels = [], [], []
        for logits, deltas, anchors in zip(outputs.cls_logits, outputs.bbox_deltas, priors):
            s = logits[i].permute(1, 2, 0).reshape(-1, head.num_classes).sigmoid()  # (H*W*A, K)
            d = deltas[i].permute(1, 2, 0).reshape(-1, 4)  # (H*W*A, 4)
            idx = torch.nonzero(s > cfg.score_thr)  # (C, 2): (anchor, class)
            vals = s[idx[:, 0], idx[:, 1]]
            vals, order = vals.sort(descending=True)
            vals, idx = vals[: cfg.nms_pre], idx[order[: cfg.nms_pre]]
            decoded = head.bbox_coder.decode(anchors[idx[:, 0]], d[idx[:, 0]],
                                             max_shape=images.img_shapes[i])
            boxes.append(decoded)
            scores.append(vals)
            labels.append(idx[:, 1])
        b = torch.cat(boxes) / images.scale_factors[i]
        s, c = torch.cat(scores), torch.cat(labels)
        sized = (b[:, 2] - b[:, 0] > cfg.min_bbox_size) & (b[:, 3] - b[:, 1] > cfg.min_bbox_size)
        b, s, c = b[sized], s[sized], c[sized]
        keep = torchvision.ops.batched_nms(b, s, c, cfg.nms.iou_threshold)[: cfg.max_per_img]
        results.append((b[keep], s[keep], c[keep]))
    return results


def test_batched_predict_equals_per_image_reference() -> None:
    torch.manual_seed(0)
    head = RetinaHead(num_classes=4, in_channels=8, stacked_convs=1, feat_channels=8,
                      test_cfg=DenseTestConfig(nms_pre=30, score_thr=0.3, max_per_img=12))
    feats = [torch.randn(3, 8, s, s) for s in (8, 4, 2, 1, 1)]
    with torch.no_grad():
        head.retina_cls.bias.fill_(0.0)  # scores near 0.5: many candidates, heavy overlap
        head.retina_cls.weight.normal_(0, 0.3)
        head.retina_reg.weight.normal_(0, 0.3)
        outputs = head(feats)
    images = ImageBatch(
        tensor=torch.zeros(3, 3, 64, 64), img_shapes=[(64, 64), (50, 60), (64, 40)],
        ori_shapes=[(64, 64), (100, 120), (32, 20)],
        scale_factors=torch.tensor([[1.0] * 4, [0.5] * 4, [2.0] * 4]))
    batch = head.predict(outputs, images)
    expected = reference_predict(head, outputs, images)
    assert batch.num_dets.tolist() == [len(b) for b, _, _ in expected]
    assert batch.num_dets.min() > 3  # the case is not trivial
    assert batch.num_dets.max() == 12  # max_per_img is reached
    for dets, (boxes, scores, labels) in zip(batch.unbind(), expected):
        assert torch.allclose(dets.boxes, boxes, atol=1e-4)
        assert torch.allclose(dets.scores, scores)
        assert torch.equal(dets.labels, labels)
