"""FCOSHead: MMDetection's module names, forward, the loss normalisation against torchvision
on hand-placed positives, prediction with centerness, config checks.

The loss case: a 32 x 32 input, strides 8 and 16 (4 x 4 and 2 x 2 points), ranges [-1, 16]
and [16, INF], 2 classes. Image 0 has one GT [2, 2, 18, 14] (label 1). Level 0 points inside
it are (4, 4), (12, 4), (4, 12), (12, 12) (flat rows 0, 1, 4, 5) with largest distances 14,
10, 14, 10 <= 16; level 1's point (8, 8) has largest distance 10 < 16. So there are 4
positives, with (l, t, r, b) targets (2, 2, 14, 10), (10, 2, 6, 10), (2, 10, 14, 2),
(10, 10, 6, 2). Image 1 has no GT.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from detcli.config.loader import load_config, validate_tree
from detcli.errors import ConfigError
from detcli.models.channels import connect_head
from detcli.models.dcn import ModulatedDeformConv2dPack
from detcli.models.dense_heads import DenseOutputs, FCOSHead, FCOSHeadConfig
from detcli.models.build import build_detector
from detcli.models.layers import NormConfig
from detcli.models.losses import GIoULoss
from detcli.registry import HEADS
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.task.assigners.fcos_rule import INF
from detcli.task.postprocess import DenseTestConfig
from tests.fixtures.mmdet.plugins_weights import plugin_state
from tests.models.backbones.seeded import seeded_input

GN4 = NormConfig(type="GN", num_groups=4)
POS_ROWS = [0, 1, 4, 5]
POS_DISTANCES = torch.tensor([[2.0, 2, 14, 10], [10, 2, 6, 10], [2, 10, 14, 2], [10, 10, 6, 2]])
POS_POINTS = torch.tensor([[4.0, 4], [12, 4], [4, 12], [12, 12]])


def make_head(**kwargs) -> FCOSHead:
    settings = dict(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1,
                    strides=[8, 16], regress_ranges=[(-1, 16), (16, INF)], norm_cfg=GN4)
    return FCOSHead(**{**settings, **kwargs})


def random_outputs(seed: int = 0) -> DenseOutputs:
    g = torch.Generator().manual_seed(seed)
    sizes = [(4, 4), (2, 2)]
    return DenseOutputs(
        [torch.randn(2, 2, h, w, generator=g) for h, w in sizes],
        [torch.rand(2, 4, h, w, generator=g) * 12 + 1 for h, w in sizes],  # pixels
        [torch.randn(2, 1, h, w, generator=g) for h, w in sizes])


def gt() -> DetTargets:
    return DetTargets.from_lists([torch.tensor([[2.0, 2, 18, 14]]), torch.zeros(0, 4)],
                                 [torch.tensor([1]), torch.zeros(0, dtype=torch.long)])


def test_module_names_are_mmdetections():
    keys = set(make_head().state_dict())
    assert {"cls_convs.0.conv.weight", "cls_convs.0.gn.weight", "reg_convs.0.gn.bias",
            "conv_cls.weight", "conv_cls.bias", "conv_reg.weight", "conv_centerness.weight",
            "scales.0.scale", "scales.1.scale"} <= keys
    assert "cls_convs.0.conv.bias" not in keys  # conv_bias "auto": no bias before a norm
    assert "cls_convs.0.conv.bias" in make_head(conv_bias=True).state_dict()
    head = make_head(prior_prob=0.01)
    assert head.conv_cls.bias[0].item() == pytest.approx(-math.log(99), rel=1e-6)


def test_forward_shapes_exp_or_relu_and_centerness_tower():
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)]
    out = make_head()(feats)
    assert [tuple(x.shape) for x in out.cls_logits] == [(2, 2, 4, 4), (2, 2, 2, 2)]
    assert [tuple(x.shape) for x in out.bbox_deltas] == [(2, 4, 4, 4), (2, 4, 2, 2)]
    assert [tuple(x.shape) for x in out.score_factors] == [(2, 1, 4, 4), (2, 1, 2, 2)]
    assert bool((out.bbox_deltas[0] > 0).all())  # exp
    relu = make_head(norm_on_bbox=True)
    with torch.no_grad():
        relu.conv_reg.bias.fill_(-1.0)
    assert bool((relu(feats).bbox_deltas[0] == 0).all())  # relu clamps at 0
    on_reg = make_head(centerness_on_reg=True)
    before = on_reg(feats).score_factors[0]
    with torch.no_grad():
        on_reg.cls_convs[0].conv.weight.mul_(3)
    assert torch.equal(on_reg(feats).score_factors[0], before)  # read from the reg tower


def test_loss_normalisation_matches_torchvision_on_the_hand_placed_positives():
    head = make_head()
    outputs = random_outputs()
    images = ImageBatch.from_tensor(torch.zeros(2, 3, 32, 32))
    losses = head.loss(outputs, images, gt())

    cls = torch.cat([x.permute(0, 2, 3, 1).reshape(2, -1, 2) for x in outputs.cls_logits], 1)
    onehot = torch.zeros_like(cls)
    onehot[0, POS_ROWS, 1] = 1.0
    num_pos = 4
    expected_cls = sigmoid_focal_loss(cls, onehot, alpha=0.25, gamma=2.0, reduction="sum") / num_pos
    torch.testing.assert_close(losses["loss_cls"], expected_cls)

    lr, tb = POS_DISTANCES[:, 0::2], POS_DISTANCES[:, 1::2]
    centerness_t = torch.sqrt(lr.min(1).values / lr.max(1).values
                              * tb.min(1).values / tb.max(1).values)
    pred = outputs.bbox_deltas[0].permute(0, 2, 3, 1).reshape(2, -1, 4)[0, POS_ROWS]  # (4, 4)
    pred_boxes = torch.cat([POS_POINTS - pred[:, :2], POS_POINTS + pred[:, 2:]], dim=1)
    iou = box_iou(pred_boxes, torch.tensor([[2.0, 2, 18, 14]]))[:, 0]  # (4,)
    expected_bbox = (centerness_t * -iou.clamp(min=1e-6).log()).sum() / centerness_t.sum()
    torch.testing.assert_close(losses["loss_bbox"], expected_bbox, rtol=1e-5, atol=1e-6)

    logits = outputs.score_factors[0].reshape(2, -1)[0, POS_ROWS]  # (4,)
    expected_ctr = F.binary_cross_entropy_with_logits(logits, centerness_t,
                                                      reduction="sum") / num_pos
    torch.testing.assert_close(losses["loss_centerness"], expected_ctr)


def test_giou_loss_can_replace_the_iou_loss():
    head = make_head(loss_bbox=GIoULoss())
    outputs = random_outputs()
    losses = head.loss(outputs, ImageBatch.from_tensor(torch.zeros(2, 3, 32, 32)), gt())
    lr, tb = POS_DISTANCES[:, 0::2], POS_DISTANCES[:, 1::2]
    centerness_t = torch.sqrt(lr.min(1).values / lr.max(1).values
                              * tb.min(1).values / tb.max(1).values)
    pred = outputs.bbox_deltas[0].permute(0, 2, 3, 1).reshape(2, -1, 4)[0, POS_ROWS]  # (4, 4)
    pred_boxes = torch.cat([POS_POINTS - pred[:, :2], POS_POINTS + pred[:, 2:]], dim=1)
    giou = generalized_box_iou_loss(pred_boxes, torch.tensor([[2.0, 2, 18, 14]]).expand(4, 4))
    torch.testing.assert_close(losses["loss_bbox"], (centerness_t * giou).sum() / centerness_t.sum())


def test_without_gt_the_losses_are_finite_zero_for_boxes_and_backprop():
    head = make_head()
    feats = [torch.randn(1, 8, 4, 4, requires_grad=True), torch.randn(1, 8, 2, 2)]
    empty = DetTargets.from_lists([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    losses = head.loss(head(feats), ImageBatch.from_tensor(torch.zeros(1, 3, 32, 32)), empty)
    assert losses["loss_bbox"].item() == 0 and losses["loss_centerness"].item() == 0
    sum(losses.values()).backward()
    assert torch.isfinite(feats[0].grad).all()


def test_norm_on_bbox_targets_are_in_strides():
    head = make_head(norm_on_bbox=True)
    points = head.prior_generator.grid_priors([(4, 4), (2, 2)], with_stride=True)
    tgt = head.get_targets(points, gt())
    torch.testing.assert_close(tgt.distances[0, POS_ROWS], POS_DISTANCES / 8)


def test_amp_and_channels_last_give_the_same_finite_loss():
    torch.manual_seed(0)
    head = make_head()
    feats = [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)]
    images = ImageBatch.from_tensor(torch.zeros(2, 3, 32, 32))
    plain = head.loss(head(feats), images, gt())
    last = head.loss(head([f.contiguous(memory_format=torch.channels_last) for f in feats]), images,
                     gt())
    for key in plain:
        torch.testing.assert_close(last[key], plain[key])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = head.loss(head(feats), images, gt())
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in amp.values())


def test_predict_multiplies_scores_by_centerness_after_the_threshold():
    """Point (12, 12) (row 5): class 1 at 0.8, centerness 0.5 -> 0.4; point (4, 4) (row 0):
    class 0 at 0.1 (> score_thr 0.05), centerness 0.2 -> 0.02, kept; row 2 at 0.04 with
    centerness 1 is dropped by the threshold. Distances (2, 3, 4, 5) -> box (10, 9, 16, 17),
    halved by the scale factor 2."""
    def logit(p):
        return math.log(p / (1 - p))

    head = make_head(test_cfg=DenseTestConfig(score_thr=0.05))
    cls = [torch.full((1, 2, 4, 4), -20.0), torch.full((1, 2, 2, 2), -20.0)]
    ctr = [torch.full((1, 1, 4, 4), 20.0), torch.full((1, 1, 2, 2), 20.0)]
    dist = [torch.full((1, 4, 4, 4), 1.0), torch.full((1, 4, 2, 2), 1.0)]
    cls[0][0, 1, 1, 1], ctr[0][0, 0, 1, 1] = logit(0.8), 0.0
    cls[0][0, 0, 0, 0], ctr[0][0, 0, 0, 0] = logit(0.1), logit(0.2)
    cls[0][0, 0, 0, 2] = logit(0.04)
    dist[0][0, :, 1, 1] = torch.tensor([2.0, 3, 4, 5])
    images = ImageBatch.from_tensor(torch.zeros(1, 3, 32, 32))
    images.scale_factors = torch.full((1, 4), 2.0)
    (dets,) = head.predict(DenseOutputs(cls, dist, ctr), images).unbind()
    torch.testing.assert_close(dets.scores, torch.tensor([0.4, 0.02]))
    assert dets.labels.tolist() == [1, 0]
    torch.testing.assert_close(dets.boxes[0], torch.tensor([5.0, 4.5, 8.0, 8.5]))
    # norm_on_bbox: the head's distances are in strides; predict multiplies them back
    strided = make_head(norm_on_bbox=True, test_cfg=DenseTestConfig(score_thr=0.05))
    dist_in_strides = [dist[0] / 8, dist[1] / 16]
    (same,) = strided.predict(DenseOutputs(cls, dist_in_strides, ctr), images).unbind()
    torch.testing.assert_close(same.boxes, dets.boxes)


def test_config_checks_and_building_through_the_registry():
    cfg = FCOSHeadConfig(num_classes=3, strides=[8, 16, 32, 64, 128], center_sampling=True)
    connect_head(cfg, 32, "model.neck (FPN out_channels 32)", "model.bbox_head")
    head = HEADS.build(cfg)
    assert head.regress_ranges[-1] == (512.0, 1e8) and head.center_sampling
    assert head.norm_on_bbox is False and head.strides[0] == (8, 8)
    with pytest.raises(ValueError, match="bbox_head.in_channels = 32 disagrees with 16 derived"):
        connect_head(FCOSHeadConfig(num_classes=3, in_channels=32), 16,
                     "model.neck (FPN out_channels 16)", "model.bbox_head")
    for tree, message in [
        ({"strides": [8, 16]}, "regress_ranges has 5 entries but strides has 2"),
        ({"strides": [8], "regress_ranges": [[64, 64]]}, "regress range [64.0, 64.0] is empty"),
        ({"norm_cfg": {"type": "GN"}}, "needs num_groups"),
    ]:
        with pytest.raises(ConfigError) as err:
            validate_tree({"type": "FCOSHead", "num_classes": 3, **tree}, FCOSHeadConfig)
        assert message in str(err.value)


PLUGINS = Path(__file__).parent.parent / "fixtures" / "mmdet" / "plugins.pt"


def test_dcn_on_last_conv_equals_mmdetection():
    """tools/mmdet_fixtures/plugins.py's ``fcos_dcn``: MMDetection 3.3's FCOSHead with
    ``dcn_on_last_conv`` (2 convs per tower, GN 4, strides 8 and 16), seeded weights loaded
    strictly under MMDetection's names, its outputs on seeded features and its loss_by_feat
    with two GT boxes (positives on both levels, both labels)."""
    fixture = torch.load(PLUGINS, weights_only=False)
    entry, seed = fixture["fcos_dcn"], fixture["seed"]
    cfg = entry["cfg"]
    head = FCOSHead(num_classes=cfg["num_classes"], in_channels=cfg["in_channels"],
                    feat_channels=cfg["feat_channels"], stacked_convs=cfg["stacked_convs"],
                    strides=cfg["strides"], regress_ranges=[(-1, 64), (64, INF)],
                    dcn_on_last_conv=True, norm_cfg=NormConfig(type="GN", num_groups=4))
    assert {k: list(v.shape) for k, v in head.state_dict().items()} == entry["shapes"]
    assert isinstance(head.cls_convs[1].conv, ModulatedDeformConv2dPack)
    assert isinstance(head.reg_convs[1].conv, ModulatedDeformConv2dPack)
    assert not isinstance(head.cls_convs[0].conv, ModulatedDeformConv2dPack)
    head.load_state_dict(plugin_state(entry["shapes"], seed), strict=True)
    head.eval()
    feats = [seeded_input(shape, seed + level) for level, shape in enumerate(entry["feats"])]
    outputs = head(feats)
    for ours, theirs in [(outputs.cls_logits, entry["cls_scores"]),
                         (outputs.bbox_deltas, entry["bbox_preds"]),
                         (outputs.score_factors, entry["centernesses"])]:
        for level in range(2):
            torch.testing.assert_close(ours[level], theirs[level], rtol=1e-5, atol=1e-5)
    targets = DetTargets.from_lists([torch.tensor(entry["gt"]["boxes"])],
                                    [torch.tensor(entry["gt"]["labels"])])
    losses = head.loss(outputs, ImageBatch.from_tensor(torch.zeros(1, 3, *entry["image"])),
                       targets)
    assert set(losses) == set(entry["losses"])
    for key, value in entry["losses"].items():
        assert losses[key].item() == pytest.approx(value, rel=1e-4), key
    sum(losses.values()).backward()  # the offsets learn: the loss reaches conv_offset
    assert head.cls_convs[1].conv.conv_offset.weight.grad.abs().sum() > 0
    assert head.reg_convs[1].conv.conv_offset.weight.grad.abs().sum() > 0


def test_a_fresh_dcn_head_keeps_mmcvs_deformable_init():
    """MMDetection's FCOSHead init: N(0, 0.01) plain convs; the DCNv2 keeps its weight
    uniform in +-1/sqrt(F 9) and a zero conv_offset (measured on MMDetection 3.3: weight std
    0.049 for F = 16, conv_offset all zero), so it starts as a plain conv with mask 0.5."""
    torch.manual_seed(0)
    cfg = FCOSHeadConfig(num_classes=2, in_channels=16, feat_channels=16, stacked_convs=2,
                         strides=[8, 16], regress_ranges=[(-1, 64), (64, INF)],
                         dcn_on_last_conv=True, norm_cfg={"type": "GN", "num_groups": 4})
    head = HEADS.build(cfg)
    dcn = head.cls_convs[1].conv
    bound = 1 / math.sqrt(16 * 9)
    assert float(dcn.weight.abs().max()) <= bound and float(dcn.weight.std()) > 0.5 * bound  # U: bound / sqrt 3
    assert not dcn.conv_offset.weight.any() and not dcn.conv_offset.bias.any()
    assert float(head.cls_convs[0].conv.weight.std()) < 0.015  # N(0, 0.01)
    x = torch.randn(1, 16, 5, 6)
    plain = F.conv2d(x, dcn.weight, padding=1)
    torch.testing.assert_close(dcn(x), 0.5 * plain, rtol=1e-5, atol=1e-6)


def test_mmdetections_fcos_dcn_zoo_model_has_the_same_keys_and_shapes():
    """MMDetection's FCOS-DCN (``fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-
    giou_1x_coco``, tools/mmdet_fixtures/fcos_dcn_shapes.py) and det's ``fcos_r50`` with the
    settings ``det config import`` translates from it: the same 407 keys in the same order,
    the same shapes, so its checkpoint loads strictly (DCNv2 with a bias: ``conv_bias``)."""
    recorded = json.loads((PLUGINS.parent / "fcos_r50_dcn_shapes.json").read_text())["shapes"]
    overrides = ['model.backbone.dcn={type = "DCNv2", deform_groups = 1}',
                 "model.backbone.stage_with_dcn=[false, true, true, true]",
                 "model.backbone.init_cfg=false", "model.bbox_head.dcn_on_last_conv=true",
                 "model.bbox_head.conv_bias=true", "model.bbox_head.norm_on_bbox=true",
                 "model.bbox_head.centerness_on_reg=true"]
    model = build_detector(load_config("fcos_r50", overrides).cfg.model)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == recorded
    assert list(model.state_dict()) == list(recorded)
    assert "bbox_head.reg_convs.3.conv.conv_offset.weight" in recorded
