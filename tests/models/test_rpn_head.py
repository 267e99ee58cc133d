"""RPNHead: MMDetection's layers (torchvision's RPN head computes the same), the objectness loss
on a written-out case, sampling and its normaliser, training, proposals and config rules.

The hand-made case (as test_retina_head's): one level of stride 16, a 2x2 feature map, one
anchor per location (scale 1, ratio 1, centre offset 0.5), so the anchors are, in layout order:
  r0 [0, 0, 16, 16]   r1 [16, 0, 32, 16]   r2 [0, 16, 16, 32]   r3 [16, 16, 32, 32]
and one GT [2, 2, 18, 22] (centre (10, 12), size 16 x 20).
IoUs: r0 196/380 = 0.516, r1 28/548 = 0.051, r2 84/492 = 0.171, r3 12/564 = 0.021.
With Faster R-CNN's RPN assigner (pos 0.7, neg 0.3, min_pos_iou 0.3, low-quality matches), r0
is positive only as the GT's best anchor (0.516 >= 0.3), r1, r2, r3 are negative (< 0.3).
"""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from detcli.config.loader import validate_tree
from detcli.errors import ConfigError, DetError
from detcli.models.channels import connect_head
from detcli.models.dense_heads import DenseOutputs, RPNHead, RPNHeadConfig
from detcli.models.dense_heads.anchor_head import AnchorTargets
from detcli.models.losses import CrossEntropyLossConfig
from detcli.registry import HEADS, LOSSES
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.task.prior_generators.anchor_generator import AnchorGenerator
from detcli.task.samplers.random_sampler import RandomSamplerConfig
from detcli.task.two_stage_cfg import ProposalConfig, rpn_train_config

GT_DELTAS = [2 / 16, 4 / 16, 0.0, math.log(20 / 16)]  # r0 -> GT: dx, dy, dw, dh


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))  # BCE of logit x against target 0; softplus(-x): target 1


def toy_head(**train: object) -> RPNHead:
    anchors = AnchorGenerator(strides=[16], ratios=[1.0], scales=[1.0], center_offset=0.5)
    train_cfg = rpn_train_config().model_copy(update=train)
    return RPNHead(in_channels=4, feat_channels=4, prior_generator=anchors, train_cfg=train_cfg)


def toy_outputs(num_images: int) -> DenseOutputs:
    """Objectness logits r0 1, r1 -1, r2 0, r3 2 in every image; r0's deltas (0.1, 0.2, 0.3,
    -0.1), 5.0 on every other anchor (never positive, so never in the box loss)."""
    logits = torch.tensor([[1.0, -1.0], [0.0, 2.0]]).expand(num_images, 1, 2, 2).clone()
    deltas = torch.full((num_images, 4, 2, 2), 5.0)  # (N, A*4, H, W)
    deltas[:, :, 0, 0] = torch.tensor([0.1, 0.2, 0.3, -0.1])
    return DenseOutputs([logits.requires_grad_(True)], [deltas.requires_grad_(True)])


def toy_batch(gt_label: int) -> tuple[ImageBatch, DetTargets]:
    """Image 0 has the GT (of class ``gt_label``), image 1 has none."""
    images = ImageBatch.from_tensor(torch.zeros(2, 3, 32, 32))
    targets = DetTargets.from_lists([torch.tensor([[2.0, 2.0, 18.0, 22.0]]), torch.zeros(0, 4)],
                                    [torch.tensor([gt_label]), torch.zeros(0, dtype=torch.long)])
    return images, targets


def spy_targets(monkeypatch: pytest.MonkeyPatch, head: RPNHead) -> list[AnchorTargets]:
    seen: list[AnchorTargets] = []
    original = head.get_targets

    def record(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(head, "get_targets", record)
    return seen


def test_layers_match_mmdetection_and_torchvision() -> None:
    torch.manual_seed(0)
    head = RPNHead(in_channels=256)  # Faster R-CNN's: feat 256, A = 3
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"rpn_conv.weight": (256, 256, 3, 3), "rpn_conv.bias": (256,),
                      "rpn_cls.weight": (3, 256, 1, 1), "rpn_cls.bias": (3,),
                      "rpn_reg.weight": (12, 256, 1, 1), "rpn_reg.bias": (12,)}
    reference = torchvision.models.detection.rpn.RPNHead(256, 3)
    count = sum(p.numel() for p in head.parameters())
    # 256*256*9 + 256 + (256*3 + 3) + (256*12 + 12)
    assert count == 593_935 == sum(p.numel() for p in reference.parameters())
    # MMDetection's init: every conv N(0, 0.01), zero bias
    for conv in (head.rpn_conv, head.rpn_cls, head.rpn_reg):
        assert 0.005 < conv.weight.std().item() < 0.015 and conv.bias.eq(0).all()

    # same computation as torchvision's RPN head (conv, ReLU, 1x1 convs) once weights are shared
    with torch.no_grad():
        for ours, theirs in zip(head.state_dict().values(), reference.state_dict().values()):
            theirs.copy_(ours)
    feats = [torch.randn(2, 256, s, s) for s in (8, 4, 2, 1, 1)]
    out = head(feats)
    logits, deltas = reference(feats)
    assert [tuple(x.shape) for x in out.cls_logits] == [(2, 3, s, s) for s in (8, 4, 2, 1, 1)]
    assert [tuple(x.shape) for x in out.bbox_deltas] == [(2, 12, s, s) for s in (8, 4, 2, 1, 1)]
    for a, b in zip(out.cls_logits + out.bbox_deltas, logits + deltas):
        torch.testing.assert_close(a, b)


def test_several_convs_are_conv_modules() -> None:
    head = RPNHead(in_channels=8, feat_channels=16, num_convs=2)
    keys = set(head.state_dict())
    assert keys == {"rpn_conv.0.conv.weight", "rpn_conv.0.conv.bias", "rpn_conv.1.conv.weight",
                    "rpn_conv.1.conv.bias", "rpn_cls.weight", "rpn_cls.bias", "rpn_reg.weight",
                    "rpn_reg.bias"}
    assert tuple(head.rpn_conv[0].conv.weight.shape) == (16, 8, 3, 3)
    assert tuple(head.rpn_conv[1].conv.weight.shape) == (16, 16, 3, 3)
    # the ConvModules' Kaiming init is replaced by N(0, 0.01) too
    assert 0.005 < head.rpn_conv[1].conv.weight.std().item() < 0.015
    out = head([torch.randn(1, 8, 4, 4)])
    assert tuple(out.cls_logits[0].shape) == (1, 3, 4, 4)


@pytest.mark.parametrize("gt_label", [0, 7])
def test_loss_on_written_out_case(monkeypatch: pytest.MonkeyPatch, gt_label: int) -> None:
    head = toy_head()
    seen = spy_targets(monkeypatch, head)
    images, targets = toy_batch(gt_label)
    losses = head.loss(toy_outputs(2), images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox"}

    (tgt,) = seen
    # whatever the GT's class, its positive is labelled 0 (object); background is K = 1
    assert tgt.labels.tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]
    assert tgt.label_weights.tolist() == [[1, 1, 1, 1], [1, 1, 1, 1]]  # all 4 sampled (<= 256)
    assert tgt.bbox_weights.tolist() == [[1, 0, 0, 0], [0, 0, 0, 0]]
    # sampling: positives + negatives of each image, each at least 1: (1 + 3) + (1 + 4) = 9
    assert tgt.avg_factor.item() == 9.0

    # image 0: r0 positive softplus(-1), negatives softplus(-1), softplus(0), softplus(2);
    # image 1: all negative: softplus(1), softplus(-1), softplus(0), softplus(2)
    #   = (0.31326 + 0.31326 + 0.69315 + 2.12693) + (1.31326 + 0.31326 + 0.69315 + 2.12693) = 7.8932
    total_cls = 2 * softplus(-1) + softplus(0) + softplus(2) + sum(
        softplus(x) for x in (1, -1, 0, 2))
    assert losses["loss_rpn_cls"].item() == pytest.approx(total_cls / 9, abs=1e-6)  # 0.87702
    # r0: |0.1 - 0.125| + |0.2 - 0.25| + |0.3 - 0| + |-0.1 - log 1.25| = 0.69814, over 9
    l1 = sum(abs(p - t) for p, t in zip([0.1, 0.2, 0.3, -0.1], GT_DELTAS))
    assert losses["loss_rpn_bbox"].item() == pytest.approx(l1 / 9, abs=1e-6)  # 0.07757


def test_sampled_budget_sets_the_normaliser(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 anchors per image, at most 1 positive: image 0 samples r0 and 1 of its 3 negatives,
    # image 1 (no GT) 2 of its 4 negatives. avg_factor = (1 + 1) + (max(0, 1) + 2) = 5
    sampler = RandomSamplerConfig(num=2, pos_fraction=0.5, add_gt_as_proposals=False)
    head = toy_head(sampler=sampler)
    seen = spy_targets(monkeypatch, head)
    images, targets = toy_batch(3)
    losses = head.loss(toy_outputs(2), images, targets)
    (tgt,) = seen
    assert tgt.label_weights.sum(dim=1).tolist() == [2.0, 2.0]
    assert tgt.label_weights[0, 0].item() == 1.0 and tgt.labels[0, 0].item() == 0
    assert tgt.avg_factor.item() == 5.0
    l1 = sum(abs(p - t) for p, t in zip([0.1, 0.2, 0.3, -0.1], GT_DELTAS))
    assert losses["loss_rpn_bbox"].item() == pytest.approx(l1 / 5, abs=1e-6)


def test_gt_as_proposals_is_rejected_for_the_dense_rpn() -> None:
    with pytest.raises(ConfigError, match="add_gt_as_proposals"):
        toy_head(sampler=RandomSamplerConfig(num=256, pos_fraction=0.5, add_gt_as_proposals=True))


def test_a_few_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    anchors = AnchorGenerator(strides=[8, 16], ratios=[0.5, 1.0, 2.0], scales=[4.0])
    head = RPNHead(in_channels=8, feat_channels=8, prior_generator=anchors,
                   train_cfg=rpn_train_config())  # 4x4x3 + 2x2x3 = 60 anchors: all sampled
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    images = ImageBatch.from_tensor(torch.zeros(1, 3, 32, 32))
    targets = DetTargets.from_lists([torch.tensor([[4.0, 4, 20, 28], [12, 8, 30, 18]])],
                                    [torch.tensor([2, 5])])
    optimiser = torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9)
    history = []
    for _ in range(15):
        losses = head.loss(head(feats), images, targets)
        optimiser.zero_grad()
        (losses["loss_rpn_cls"] + losses["loss_rpn_bbox"]).backward()
        optimiser.step()
        history.append((losses["loss_rpn_cls"].item(), losses["loss_rpn_bbox"].item()))
    assert history[0][0] == pytest.approx(math.log(2), abs=0.01)  # N(0, 0.01) init: p ~ 0.5
    assert history[-1][0] < 0.5 * history[0][0]
    assert history[-1][1] < 0.5 * history[0][1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = head.loss(head(feats), images, targets)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in amp.values())


def test_predict_proposals_end_to_end() -> None:
    torch.manual_seed(0)
    head = RPNHead(in_channels=8, feat_channels=8, test_cfg=ProposalConfig(max_per_img=7))
    with torch.no_grad():
        head.rpn_cls.weight.normal_(0, 1.0)  # spread the objectness
        head.rpn_reg.weight.normal_(0, 0.3)
    feats = [torch.randn(2, 8, s, s) for s in (16, 8, 4, 2, 1)]  # strides 4..64 of 64 x 64
    images = ImageBatch(tensor=torch.zeros(2, 3, 64, 64), img_shapes=[(64, 64), (40, 50)],
                        ori_shapes=[(128, 128), (40, 50)],
                        scale_factors=torch.tensor([[0.5] * 4, [1.0] * 4]))
    props = head.predict_proposals(head(feats), images, ProposalConfig(nms_pre=50, max_per_img=120))
    assert props.boxes.shape == (2, 120, 4) and props.valid.shape == (2, 120)
    assert not props.boxes.requires_grad
    num = props.num_valid.tolist()
    assert all(20 < n < 120 for n in num)  # 50 + 50 + 48 + 12 + 3 candidates, NMS removes some
    for i, (h, w) in enumerate(images.img_shapes):
        n = num[i]
        assert props.valid[i, :n].all() and not props.valid[i, n:].any()
        assert (props.scores[i, : n - 1] >= props.scores[i, 1:n]).all()
        boxes = props.boxes[i, :n]  # network-input pixels, inside the image (not rescaled)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert props.boxes[i, n:].eq(0).all() and props.scores[i, n:].eq(0).all()
    assert props.boxes[1, :num[1], 2].max() == 50  # some box is clipped to image 1's width

    default = head.predict_proposals(head(feats), images)  # cfg None: the head's test_cfg
    assert default.boxes.shape == (2, 7, 4) and default.valid.all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = head.predict_proposals(head(feats), images)
    assert amp.boxes.dtype == torch.float32 and amp.valid.all()
    with pytest.raises(DetError, match="predict_proposals"):
        head.predict(head(feats), images)


def test_config_defaults_and_checks() -> None:
    cfg = validate_tree({"type": "RPNHead"}, RPNHeadConfig)
    assert (cfg.anchor_generator.scales, cfg.anchor_generator.ratios) == ([8.0], [0.5, 1.0, 2.0])
    assert cfg.anchor_generator.strides == [4, 8, 16, 32, 64]
    assert cfg.bbox_coder.target_stds == [1.0, 1.0, 1.0, 1.0]
    assert (cfg.loss_cls.type, cfg.loss_cls.use_sigmoid) == ("CrossEntropyLoss", True)
    assert cfg.loss_bbox.type == "L1Loss" and cfg.num_convs == 1 and cfg.feat_channels == 256
    connect_head(cfg, 256, "model.neck (FPN out_channels 256)", "model.rpn_head")
    head = HEADS.build(cfg, train_cfg=rpn_train_config(), test_cfg=ProposalConfig(nms_pre=2000))
    assert isinstance(head, RPNHead) and head.in_channels == 256 and head.num_classes == 1
    assert head.num_base_priors == 3 and head.sampling and head.test_cfg.nms_pre == 2000
    assert type(head.sampler).__name__ == "RandomSampler"

    with pytest.raises(ValueError, match="rpn_head.in_channels = 128 disagrees with 256 derived"):
        connect_head(RPNHeadConfig(in_channels=128), 256, "model.neck (FPN out_channels 256)",
                     "model.rpn_head")
    with pytest.raises(ConfigError, match="needs in_channels"):
        HEADS.build(RPNHeadConfig())
    assert HEADS.build(RPNHeadConfig(in_channels=64)).in_channels == 64
    for tree in ({"num_classes": 1}, {"num_convs": 0}, {"stacked_convs": 2}):
        with pytest.raises(ConfigError):
            validate_tree({"type": "RPNHead", **tree}, RPNHeadConfig)
    with pytest.raises(ConfigError, match="sigmoid"):  # a softmax RPN (2 logits) is not built
        RPNHead(in_channels=8, loss_cls=LOSSES.build(CrossEntropyLossConfig(use_sigmoid=False)))
    # ... and the config says so first, naming the key
    with pytest.raises(ConfigError, match=r"loss_cls: the RPN scores objectness .* use_sigmoid"):
        validate_tree({"type": "RPNHead", "loss_cls": {"type": "CrossEntropyLoss"}}, RPNHeadConfig)
