"""ATSSHead: MMDetection's module names, the loss normalisation against torchvision on the
ATSS assignment, centerness at prediction, and its config rules.

The case: a 32 x 32 input, one 8 x 8 anchor per location at stride 8 (4 x 4) and one 16 x 16
at stride 16 (2 x 2), 2 classes, topk 9. Image 0 has GT [2, 2, 18, 14] (label 1), image 1 has
none, so the classification normaliser is P = positives of image 0 + 1 (each image counts at
least one, as MMDetection's ATSS).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from detcli.config.loader import validate_tree
from detcli.errors import ConfigError
from detcli.models.dense_heads import ATSSHead, ATSSHeadConfig, DenseOutputs
from detcli.models.layers import NormConfig
from detcli.registry import HEADS
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.task.assigners import ATSSAssigner, ATSSAssignerConfig
from detcli.task.prior_generators import AnchorGenerator
from detcli.task.samplers import RandomSamplerConfig
from detcli.task.train_cfg import DenseTrainConfig

GT_BOX = torch.tensor([[2.0, 2, 18, 14]])
TRAIN = DenseTrainConfig(assigner=ATSSAssignerConfig(topk=9))


def make_head(**kwargs) -> ATSSHead:
    settings = dict(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1,
                    norm_cfg=NormConfig(type="GN", num_groups=4), train_cfg=TRAIN,
                    prior_generator=AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1.0]))
    return ATSSHead(**{**settings, **kwargs})


def gt() -> DetTargets:
    return DetTargets.from_lists([GT_BOX, torch.zeros(0, 4)],
                                 [torch.tensor([1]), torch.zeros(0, dtype=torch.long)])


def random_outputs() -> DenseOutputs:
    g = torch.Generator().manual_seed(0)
    sizes = [(4, 4), (2, 2)]
    return DenseOutputs([torch.randn(2, 2, h, w, generator=g) for h, w in sizes],
                              [torch.randn(2, 4, h, w, generator=g) * 0.3 for h, w in sizes],
                              [torch.randn(2, 1, h, w, generator=g) for h, w in sizes])


def test_module_names_are_mmdetections():
    keys = set(make_head().state_dict())
    assert {"cls_convs.0.conv.weight", "cls_convs.0.gn.weight", "reg_convs.0.gn.weight",
            "atss_cls.weight", "atss_reg.weight", "atss_centerness.weight", "atss_centerness.bias",
            "scales.0.scale", "scales.1.scale"} <= keys
    assert "cls_convs.0.conv.bias" not in keys
    out = make_head()([torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)])
    assert [tuple(x.shape) for x in out.score_factors] == [(1, 1, 4, 4), (1, 1, 2, 2)]


def test_loss_normalisation_matches_torchvision_on_the_atss_assignment():
    head = make_head()
    outputs = random_outputs()
    losses = head.loss(outputs, ImageBatch.from_tensor(torch.zeros(2, 3, 32, 32)), gt())

    priors = torch.cat(head.prior_generator.grid_priors([(4, 4), (2, 2)]))  # (20, 4)
    assign = ATSSAssigner(topk=9).assign(priors, gt().boxes, gt().labels,
                                         num_level_priors=[16, 4])
    pos = assign.gt_index[0] >= 0  # (20,)
    num_pos = int(pos.sum())
    assert num_pos >= 2  # the case has several positives
    normaliser = num_pos + 1  # image 1 has none and counts 1

    def flat(per_level, channels):
        return torch.cat([x.permute(0, 2, 3, 1).reshape(2, -1, channels) for x in per_level], 1)

    cls = flat(outputs.cls_logits, 2)  # (2, 20, 2)
    onehot = torch.zeros_like(cls)
    onehot[0, pos, 1] = 1.0
    expected_cls = sigmoid_focal_loss(cls, onehot, reduction="sum") / normaliser
    torch.testing.assert_close(losses["loss_cls"], expected_cls)

    anchors = priors[pos]  # (P, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    dist = torch.cat([centres - GT_BOX[:, :2], GT_BOX[:, 2:] - centres], dim=1)  # l, t, r, b
    lr, tb = dist[:, [0, 2]], dist[:, [1, 3]]
    ctr_t = torch.sqrt(lr.min(1).values / lr.max(1).values * tb.min(1).values / tb.max(1).values)
    decoded = head.bbox_coder.decode(anchors, flat(outputs.bbox_deltas, 4)[0, pos])
    giou = generalized_box_iou_loss(decoded, GT_BOX.expand_as(decoded), reduction="none")
    expected_bbox = 2.0 * (giou * ctr_t).sum() / ctr_t.sum().clamp(min=1)  # loss_weight 2
    torch.testing.assert_close(losses["loss_bbox"], expected_bbox, rtol=1e-5, atol=1e-6)

    logits = flat(outputs.score_factors, 1)[0, pos, 0]
    expected_ctr = F.binary_cross_entropy_with_logits(logits, ctr_t, reduction="sum") / normaliser
    torch.testing.assert_close(losses["loss_centerness"], expected_ctr)


def test_no_gt_gives_finite_losses_and_gradients():
    head = make_head()
    feats = [torch.randn(1, 8, 4, 4, requires_grad=True), torch.randn(1, 8, 2, 2)]
    empty = DetTargets.from_lists([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    losses = head.loss(head(feats), ImageBatch.from_tensor(torch.zeros(1, 3, 32, 32)), empty)
    assert losses["loss_bbox"].item() == 0 and losses["loss_centerness"].item() == 0
    sum(losses.values()).backward()
    assert torch.isfinite(feats[0].grad).all()


def test_predict_scores_are_class_times_centerness():
    head = make_head()
    outputs = random_outputs()
    images = ImageBatch.from_tensor(torch.zeros(2, 3, 32, 32))
    sure = DenseOutputs(outputs.cls_logits, outputs.bbox_deltas,
                              [torch.full_like(x, 30.0) for x in outputs.score_factors])
    half = DenseOutputs(outputs.cls_logits, outputs.bbox_deltas,
                              [torch.zeros_like(x) for x in outputs.score_factors])
    full, halved = head.predict(sure, images), head.predict(half, images)
    assert int(full.num_dets.sum()) > 0
    torch.testing.assert_close(halved.scores, full.scores * 0.5)  # same boxes kept, scores x 0.5
    assert torch.equal(halved.labels, full.labels)


def test_atss_rules_decoded_boxes_and_every_assigned_prior(caplog):
    with pytest.raises(ConfigError, match="set reg_decoded_bbox = true"):
        make_head(reg_decoded_bbox=False)
    sampled = DenseTrainConfig(assigner=ATSSAssignerConfig(), sampler=RandomSamplerConfig(num=8))
    head = make_head(train_cfg=sampled)
    assert type(head.sampler).__name__ == "PseudoSampler" and head.sampling is False
    assert "train_cfg.sampler RandomSampler is not used" in caplog.text


def test_config_defaults_are_mmdetections_atss():
    cfg = validate_tree({"type": "ATSSHead", "num_classes": 80, "in_channels": 256}, ATSSHeadConfig)
    assert cfg.anchor_generator.octave_base_scale == 8 and cfg.anchor_generator.ratios == [1.0]
    assert cfg.bbox_coder.target_stds == [0.1, 0.1, 0.2, 0.2]
    assert (cfg.loss_bbox.type, cfg.loss_bbox.loss_weight) == ("GIoULoss", 2.0)
    assert cfg.loss_centerness.use_sigmoid and cfg.norm_cfg.num_groups == 32
    head = HEADS.build(cfg, train_cfg=TRAIN)
    assert head.num_base_priors == 1 and head.reg_decoded_bbox


def test_amp_and_channels_last_losses_are_finite_and_equal():
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
