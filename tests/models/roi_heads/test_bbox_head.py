"""Shared2FCBBoxHead: layers, init and size, the R-CNN deltas, the loss on written-out RoIs,
and per-class box prediction.

Loss case, K = 3 classes, 4 RoIs:
  r0 positive class 2, r1 positive class 0, r2 negative (label 3), r3 padding (weight 0).
Class logits (background last):
  r0 [0, 0, ln 4, 0]  -> p(2) = 4/7, argmax 2 (right)
  r1 [0, ln 2, 0, 0]  -> p(0) = 1/5, argmax 1 (wrong)
  r2 [0, 0, 0, ln 3]  -> p(bg) = 3/6, argmax 3 (right)
  r3 anything, weight 0
loss_cls = (ln 7/4 + ln 5 + ln 2) / 3 (three RoIs with a label weight > 0); acc = 2/3 * 100.
Box outputs: the labelled class's 4 deltas of r0 are (1, 2, 3, 4), of r1 (0, 0, 0, 1), with
targets (1, 2, 3, 3) and (0, 0, 0, 0): |differences| sum = 1 + 1 = 2; every other output 1e4.
loss_bbox = 2 / avg_factor (3 sampled RoIs).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from detcli.errors import ConfigError
from detcli.models.roi_heads import (
    Shared2FCBBoxHead,
    Shared2FCBBoxHeadConfig,
    StandardRoIHeadConfig,
)
from detcli.registry import BBOX_HEADS

GARBAGE = 1e4


def toy_head(**kwargs: object) -> Shared2FCBBoxHead:
    return Shared2FCBBoxHead(num_classes=3, in_channels=2, roi_feat_size=2, fc_out_channels=8,
                             **kwargs)  # type: ignore[arg-type]


def loss_case() -> dict[str, torch.Tensor]:
    ln = math.log
    cls_score = torch.tensor([[0, 0, ln(4), 0], [0, ln(2), 0, 0], [0, 0, 0, ln(3)],
                              [9.0, 0, 0, 0]], requires_grad=True)
    bbox_pred = torch.full((4, 12), GARBAGE)
    bbox_pred[0, 8:12] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # r0, class 2
    bbox_pred[1, 0:4] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # r1, class 0
    return dict(
        cls_score=cls_score,
        bbox_pred=bbox_pred.requires_grad_(),
        rois=torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [5, 5, 9, 9], [0, 0, 0, 0]]),
        labels=torch.tensor([2, 0, 3, 3]),
        label_weights=torch.tensor([1.0, 1.0, 1.0, 0.0]),
        bbox_targets=torch.tensor([[1.0, 2, 3, 3], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
        bbox_weights=torch.tensor([1.0, 1.0, 0.0, 0.0]),
    )


def test_faster_rcnn_head_size_names_and_init() -> None:
    head = Shared2FCBBoxHead(num_classes=80, in_channels=256)
    # shared_fcs.0: 256*7*7 = 12544 -> 1024: 12544 * 1024 + 1024 = 12,846,080
    # shared_fcs.1: 1024 * 1024 + 1024 = 1,049,600;  fc_cls: 1024 * 81 + 81 = 83,025
    # fc_reg: 1024 * 320 + 320 = 328,000;  total 14,306,705
    assert sum(p.numel() for p in head.parameters()) == 14_306_705
    assert list(head.state_dict()) == [
        "shared_fcs.0.weight", "shared_fcs.0.bias", "shared_fcs.1.weight", "shared_fcs.1.bias",
        "fc_cls.weight", "fc_cls.bias", "fc_reg.weight", "fc_reg.bias"]
    for fc in (*head.shared_fcs, head.fc_cls, head.fc_reg):
        assert torch.all(fc.bias == 0)
    # Xavier uniform on 12544 -> 1024: bound sqrt(6 / (12544 + 1024)) = 0.02103
    assert head.shared_fcs[0].weight.abs().max() <= 0.02103
    assert 0.011 < head.shared_fcs[0].weight.std() < 0.013  # bound / sqrt(3) = 0.01214
    assert 0.009 < head.fc_cls.weight.std() < 0.011  # N(0, 0.01)
    assert 0.0009 < head.fc_reg.weight.std() < 0.0011  # N(0, 0.001)
    agnostic = Shared2FCBBoxHead(num_classes=80, in_channels=256, reg_class_agnostic=True)
    assert agnostic.fc_reg.weight.shape == (4, 1024)


def test_forward_shapes_and_relu() -> None:
    head = toy_head()
    cls_score, bbox_pred = head(torch.randn(5, 2, 2, 2))
    assert cls_score.shape == (5, 4) and bbox_pred.shape == (5, 12)
    # zero shared weights with a negative bias: ReLU zeroes the features, outputs = biases
    for fc in head.shared_fcs:
        torch.nn.init.zeros_(fc.weight)
        torch.nn.init.constant_(fc.bias, -1.0)
    torch.nn.init.constant_(head.fc_cls.bias, 0.5)
    cls_score, _ = head(torch.randn(3, 2, 2, 2))
    assert torch.equal(cls_score, torch.full((3, 4), 0.5))


def test_rcnn_deltas_by_hand() -> None:
    # RoI [2, 4, 12, 19]: centre (7, 11.5), size 10 x 15; GT [2, 4, 12, 24]: centre (7, 14),
    # size 10 x 20. dx = 0; dy = 2.5 / 15 / 0.1 = 1.6667; dw = log(1) = 0;
    # dh = log(20 / 15) / 0.2 = 0.287682 / 0.2 = 1.438410
    head = toy_head()
    deltas = head.bbox_coder.encode(torch.tensor([2.0, 4, 12, 19]), torch.tensor([2.0, 4, 12, 24]))
    assert torch.allclose(deltas, torch.tensor([0.0, 5 / 3, 0.0, 1.438410]), atol=1e-5)


def test_loss_on_written_out_rois() -> None:
    head = toy_head()
    case = loss_case()
    out = head.loss(**case, avg_factor_bbox=torch.tensor(3.0))
    assert set(out) == {"loss_cls", "loss_bbox", "acc"}
    expected_cls = (math.log(7 / 4) + math.log(5) + math.log(2)) / 3
    assert out["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-5)
    reference = F.cross_entropy(case["cls_score"][:3], case["labels"][:3])  # mean over sampled
    assert out["loss_cls"].item() == pytest.approx(reference.item(), rel=1e-5)
    # only the labelled class's 4 outputs count: the 1e4 garbage elsewhere does not
    assert out["loss_bbox"].item() == pytest.approx(2 / 3, rel=1e-5)
    assert out["acc"].item() == pytest.approx(200 / 3, rel=1e-5)
    assert not out["acc"].requires_grad
    (out["loss_cls"] + out["loss_bbox"]).backward()
    grad = case["bbox_pred"].grad
    assert torch.count_nonzero(grad) == 2  # r0 class 2 dh and r1 class 0 dh
    assert grad[0, 11] == pytest.approx(1 / 3) and grad[1, 3] == pytest.approx(1 / 3)
    # avg_factor_bbox defaults to every RoI passed (MMDetection's bbox_targets.size(0))
    default = head.loss(**loss_case())
    assert default["loss_bbox"].item() == pytest.approx(2 / 4, rel=1e-5)


def test_loss_class_agnostic_and_decoded() -> None:
    case = loss_case()
    agnostic = toy_head(reg_class_agnostic=True)
    case["bbox_pred"] = torch.tensor([[1.0, 2, 3, 4], [0, 0, 0, 1], [GARBAGE] * 4,
                                      [GARBAGE] * 4])
    out = agnostic.loss(**case, avg_factor_bbox=3.0)
    assert out["loss_bbox"].item() == pytest.approx(2 / 3, rel=1e-5)

    # decoded: zero deltas decode to the RoI itself; targets are GT boxes.
    # r0 RoI [0, 0, 10, 10] vs GT [1, 0, 10, 12]: |1| + |2| = 3; r1 RoI [0, 0, 20, 20] vs
    # GT [0, 0, 20, 20]: 0. loss_bbox = 3 / 3 = 1.
    decoded = toy_head(reg_decoded_bbox=True)
    case = loss_case()
    case["bbox_pred"] = torch.zeros(4, 12)
    case["bbox_pred"][2:] = GARBAGE
    case["bbox_targets"] = torch.tensor([[1.0, 0, 10, 12], [0, 0, 20, 20], [0] * 4, [0] * 4])
    out = decoded.loss(**case, avg_factor_bbox=3.0)
    assert out["loss_bbox"].item() == pytest.approx(1.0, rel=1e-5)


def test_loss_without_positives_is_zero_and_connected() -> None:
    head = toy_head()
    cls_score = torch.zeros(2, 4, requires_grad=True)
    bbox_pred = torch.randn(2, 12, requires_grad=True)
    out = head.loss(cls_score, bbox_pred, torch.zeros(2, 4), torch.tensor([3, 3]),
                    torch.ones(2), torch.zeros(2, 4), torch.zeros(2), avg_factor_bbox=2.0)
    assert out["loss_bbox"].item() == 0.0
    assert out["loss_cls"].item() == pytest.approx(math.log(4), rel=1e-5)  # uniform over 4
    (out["loss_cls"] + out["loss_bbox"]).backward()
    assert bbox_pred.grad is not None and torch.all(bbox_pred.grad == 0)


def test_predict_boxes_by_hand() -> None:
    # one image 100 x 80 (h, w); K = 3.
    # RoI 0 [10, 10, 30, 30] (centre 20, size 20): logits [ln 1, ln 2, ln 3, ln 4] -> scores
    #   1/10, 2/10, 3/10 (background 4/10 dropped). Class 0 deltas 0 -> the RoI itself;
    #   class 1 deltas (1, 0, 0, 0): dx = 1 * 0.1 * 20 = 2 px -> [12, 10, 32, 30]; class 2
    #   deltas (0, 0, 5 * ln 2, 0): dw = 0.2 * 5 ln 2 = ln 2 -> width 40 -> [0, 10, 40, 30].
    # RoI 1 [70, 50, 90, 60]: zero deltas, class 2 dx = 10 -> shift 20 px -> [90, 50, 110, 60],
    #   clipped to the width 80 -> [80, 50, 80, 60].
    head = toy_head()
    ln = math.log
    rois = torch.tensor([[[10.0, 10, 30, 30], [70, 50, 90, 60]]])  # (1, 2, 4)
    cls_score = torch.tensor([[[ln(1), ln(2), ln(3), ln(4)], [0.0, 0, 0, 0]]])
    bbox_pred = torch.zeros(1, 2, 12)
    bbox_pred[0, 0, 4] = 1.0
    bbox_pred[0, 0, 10] = 5 * ln(2)
    bbox_pred[0, 1, 8] = 10.0
    boxes, scores = head.predict_boxes(rois, cls_score, bbox_pred, torch.tensor([[100.0, 80]]))
    assert boxes.shape == (1, 2, 3, 4) and scores.shape == (1, 2, 3)
    assert torch.allclose(scores[0, 0], torch.tensor([0.1, 0.2, 0.3]))
    assert torch.allclose(scores[0, 1], torch.full((3,), 0.25))
    expected = torch.tensor([[[10.0, 10, 30, 30], [12, 10, 32, 30], [0, 10, 40, 30]],
                             [[70, 50, 80, 60], [70, 50, 80, 60], [80, 50, 80, 60]]])
    assert torch.allclose(boxes[0], expected, atol=1e-4)

    agnostic = toy_head(reg_class_agnostic=True)
    boxes, _ = agnostic.predict_boxes(rois, cls_score, bbox_pred[..., 4:8],
                                      torch.tensor([[100.0, 80]]))
    assert torch.allclose(boxes[0, 0], torch.tensor([[12.0, 10, 32, 30]] * 3), atol=1e-4)


def test_config_defaults_build_and_sigmoid_rejected() -> None:
    cfg = Shared2FCBBoxHeadConfig(num_classes=80)
    assert cfg.bbox_coder.target_stds == [0.1, 0.1, 0.2, 0.2]
    assert cfg.loss_cls.use_sigmoid is False and cfg.loss_bbox.type == "L1Loss"
    assert cfg.fc_out_channels == 1024 and cfg.roi_feat_size == 7
    with pytest.raises(ConfigError, match="needs in_channels"):
        BBOX_HEADS.build(cfg)
    # in_channels is the extractor's, connected when the RoI head's config is (config phase)
    roi = StandardRoIHeadConfig(bbox_head=cfg)
    roi.connect(256, "model.neck (FPN out_channels 256)", "model.roi_head")
    head = BBOX_HEADS.build(roi.bbox_head)
    assert isinstance(head, Shared2FCBBoxHead) and head.fc_reg.out_features == 320
    assert head.in_channels == 256 and head.bbox_coder.stds == (0.1, 0.1, 0.2, 0.2)
    roi = StandardRoIHeadConfig(bbox_head=Shared2FCBBoxHeadConfig(num_classes=80, in_channels=128))
    with pytest.raises(ValueError, match="bbox_head.in_channels = 128 disagrees with 256"):
        roi.connect(256, "model.neck (FPN out_channels 256)", "model.roi_head")
    with pytest.raises(ValidationError, match="softmax"):  # the one check (not the constructor)
        Shared2FCBBoxHeadConfig(num_classes=80,
                                loss_cls={"type": "CrossEntropyLoss", "use_sigmoid": True})


def test_bf16_outputs_give_float32_losses() -> None:
    head = toy_head()
    case = loss_case()
    case["cls_score"] = case["cls_score"].detach().bfloat16()
    case["bbox_pred"] = case["bbox_pred"].detach().bfloat16()
    out = head.loss(**case, avg_factor_bbox=3.0)
    assert out["loss_cls"].dtype == torch.float32 and out["loss_bbox"].dtype == torch.float32
    assert out["loss_bbox"].item() == pytest.approx(2 / 3, rel=1e-2)
