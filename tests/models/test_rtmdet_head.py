"""RTMDetSepBNHead and the CSPNeXt parts on small hand-checked cases (the MMDetection parity of
the whole model is tests/models/test_rtmdet_vs_mmdet.py)."""

from __future__ import annotations

import math

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
import torch

from detcli.errors import ConfigError, DetError
from detcli.models.build import build_detector
from detcli.models.dense_heads.rtmdet_head import RTMDetSepBNHead
from detcli.models.layers import DepthwiseSeparableConvModule
from detcli.ops.logits import inverse_sigmoid
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import DenseOutputs
from detcli.task.train_cfg import DenseTrainConfig

TINY = {
    "type": "RTMDet",
    "backbone": {"type": "CSPNeXt", "deepen_factor": 0.167, "widen_factor": 0.125},
    "neck": {"type": "CSPNeXtPAFPN", "out_channels": 16, "num_csp_blocks": 1},
    "bbox_head": {"type": "RTMDetSepBNHead", "num_classes": 2, "stacked_convs": 1,
                  "feat_channels": 16, "with_objectness": False},
}


def batch(num_gt: list[int]) -> tuple[ImageBatch, DetTargets]:
    images = ImageBatch(tensor=torch.randn(len(num_gt), 3, 64, 64, generator=torch.Generator()
                                           .manual_seed(0)),
                        img_shapes=[(64, 64)] * len(num_gt), ori_shapes=[(64, 64)] * len(num_gt),
                        scale_factors=torch.ones(len(num_gt), 4))
    boxes = [torch.tensor([[4.0, 4.0, 40.0, 30.0], [20.0, 30.0, 60.0, 62.0]])[:n] for n in num_gt]
    labels = [torch.tensor([0, 1])[:n] for n in num_gt]
    return images, DetTargets.from_lists(boxes, labels)


def test_outputs_are_per_level_logits_and_pixel_distances():
    model = build_detector(TINY)
    outputs = model(torch.zeros(2, 3, 64, 96))
    assert [tuple(x.shape) for x in outputs.cls_logits] == [(2, 2, 8, 12), (2, 2, 4, 6),
                                                           (2, 2, 2, 3)]
    assert [tuple(x.shape) for x in outputs.bbox_deltas] == [(2, 4, 8, 12), (2, 4, 4, 6),
                                                            (2, 4, 2, 3)]
    assert outputs.score_factors is None
    head = model.bbox_head
    # raw distances are rtm_reg's output times the stride (8, 16, 32)
    feats = [torch.randn(1, 16, 2, 2) for _ in range(3)]
    out = head(feats)
    for level, stride in enumerate((8, 16, 32)):
        reg = head.rtm_reg[level](head.reg_convs[level][0](feats[level]))
        torch.testing.assert_close(out.bbox_deltas[level], reg * stride)


def test_objectness_is_the_geometric_mean_of_the_two_probabilities():
    assert inverse_sigmoid(torch.tensor([0.5])).item() == pytest.approx(0.0)
    assert inverse_sigmoid(torch.tensor([0.75])).item() == pytest.approx(math.log(3))
    assert inverse_sigmoid(torch.tensor([1.0])).item() == pytest.approx(math.log(1 / 1e-5))
    head = RTMDetSepBNHead(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1,
                           with_objectness=True)
    feats = [torch.randn(1, 8, 2, 2) for _ in range(3)]
    out = head(feats)
    cls = head.rtm_cls[0](head.cls_convs[0][0](feats[0]))
    obj = head.rtm_obj[0](head.reg_convs[0][0](feats[0]))
    torch.testing.assert_close(out.cls_logits[0].sigmoid(),
                               (cls.sigmoid() * obj.sigmoid()).sqrt(), rtol=1e-4, atol=1e-6)


def test_losses_are_finite_without_gt_and_backward_reaches_the_backbone():
    model = build_detector(TINY)
    model.train()
    images, targets = batch([2, 0])
    losses = model.loss(images, targets)
    assert set(losses) == {"loss_cls", "loss_bbox"}
    sum(losses.values()).backward()
    assert model.backbone.stem[0].conv.weight.grad.abs().sum() > 0
    images, targets = batch([0, 0])  # no GT at all: only negatives, zero box loss
    losses = model.loss(images, targets)
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_bbox"].item() == 0.0


def test_explain_assignment_gives_the_losss_positives():
    model = build_detector(TINY)
    images, targets = batch([2, 1])
    outputs = model(images.tensor)
    explained = model.bbox_head.explain_assignment(outputs, images, targets)
    result, *_ = model.bbox_head.assign(outputs, images, targets)
    assert torch.equal(explained.gt_index, result.gt_index)
    assert (explained.gt_index >= 0).any()
    assert explained.priors.shape == (8 * 8 + 4 * 4 + 2 * 2, 4)  # stride-sized cells


def test_config_errors_name_the_setting():
    with pytest.raises(ConfigError, match="DynamicSoftLabelAssigner"):
        RTMDetSepBNHead(num_classes=2, in_channels=8, train_cfg=DenseTrainConfig())  # MaxIoU
    with pytest.raises(ConfigError, match="share_conv"):
        RTMDetSepBNHead(num_classes=2, in_channels=8, use_depthwise=True, share_conv=True)
    with pytest.raises(ConfigError, match="offset"):
        build_detector({**TINY, "bbox_head": {**TINY["bbox_head"], "anchor_generator": {
            "type": "MlvlPointGenerator", "strides": [8, 16, 32], "offset": 0.5}}})


def test_depthwise_separable_conv_module_names_and_groups():
    conv = DepthwiseSeparableConvModule(4, 6, 3, padding=1, activation="SiLU",
                                        norm_cfg=None)
    assert [k for k, _ in conv.named_parameters()] == [
        "depthwise_conv.conv.weight", "depthwise_conv.conv.bias",
        "pointwise_conv.conv.weight", "pointwise_conv.conv.bias"]
    assert conv.depthwise_conv.conv.groups == 4
    assert conv(torch.zeros(1, 4, 5, 5)).shape == (1, 6, 5, 5)


def test_stand_in_outputs_are_refused_with_the_reason():
    # det analyze anchors passes one-channel stand-ins; the dynamic assigner needs predictions
    model = build_detector(TINY)
    images, targets = batch([1])
    zero = torch.zeros(())
    stand_in = [zero.expand(1, 1, s, s) for s in (8, 4, 2)]
    with pytest.raises(DetError, match="ranks points by the head's own predictions"):
        model.bbox_head.explain_assignment(DenseOutputs(stand_in, stand_in), images, targets)


def _seeded_head() -> RTMDetSepBNHead:
    torch.manual_seed(3)
    return RTMDetSepBNHead(num_classes=2, in_channels=8, feat_channels=8, stacked_convs=1,
                           with_objectness=False, exp_on_reg=True)


def _rank_inputs(rank: int):
    torch.manual_seed(5)
    feats = [torch.randn(1, 8, s, s) for s in (8, 4, 2)]
    images, targets = batch([rank + 1])  # rank 0: one GT, rank 1: two
    images = ImageBatch(tensor=images.tensor[:1], img_shapes=[(64, 64)], ori_shapes=[(64, 64)],
                        scale_factors=torch.ones(1, 4))
    return feats, images, targets


def _ddp_worker(rank: int, world: int, init_file: str, out: dict) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP thread pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        head = _seeded_head()
        feats, images, targets = _rank_inputs(rank)
        outputs = head(feats)
        result, *_ = head.assign(outputs, images, targets)
        losses = head.loss(outputs, images, targets)
        out[rank] = {"quality": float(result.max_iou.sum()),
                     **{k: float(v.detach()) for k, v in losses.items()}}
    finally:
        dist.destroy_process_group()


def test_under_ddp_the_normaliser_is_the_mean_over_ranks(tmp_path):
    out = mp.Manager().dict()
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2,
                       join=True, start_method="fork")
    mean = max((out[0]["quality"] + out[1]["quality"]) / 2, 1.0)
    for rank in (0, 1):
        head = _seeded_head()  # the same rank's loss in one process: its own normaliser
        feats, images, targets = _rank_inputs(rank)
        alone = head.loss(head(feats), images, targets)
        own = max(out[rank]["quality"], 1.0)
        for key in ("loss_cls", "loss_bbox"):
            expected = float(alone[key].detach()) * own
            assert out[rank][key] * mean == pytest.approx(expected, rel=1e-5)
    # the ranks' normalisers differ and count (above the clamp at 1)
    assert min(out[0]["quality"], out[1]["quality"]) > 1
    assert out[0]["quality"] != out[1]["quality"]
