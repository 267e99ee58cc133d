"""Faster R-CNN assembled: config derivation, state-dict layout and size of the R50 preset
against torchvision's fasterrcnn_resnet50_fpn, loss keys, a tiny train run, prediction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models.detection import fasterrcnn_resnet50_fpn

from detcli.config.loader import load_config, validate_tree
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.models.detectors import FasterRCNN, FasterRCNNConfig
from detcli.models.introspect import config_num_classes, detection_test_cfg, num_classes_key, num_classes_of
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.proposals import Proposals

PRESETS = Path(__file__).resolve().parents[2] / "presets"

TINY = {
    "type": "FasterRCNN",
    "backbone": {"type": "ResNet", "depth": 18, "base_channels": 8, "frozen_stages": -1,
                 "norm_eval": False, "init_cfg": False},
    "neck": {"type": "FPN", "out_channels": 16, "num_outs": 5},
    "rpn_head": {"type": "RPNHead", "feat_channels": 16,
                 "anchor_generator": {"type": "AnchorGenerator", "scales": [4],
                                      "ratios": [0.5, 1.0, 2.0], "strides": [4, 8, 16, 32, 64]}},
    "roi_head": {"type": "StandardRoIHead",
                 "bbox_roi_extractor": {"type": "SingleRoIExtractor",
                                        "roi_layer": {"type": "RoIAlign", "output_size": 7},
                                        "featmap_strides": [4, 8, 16, 32]},
                 "bbox_head": {"type": "Shared2FCBBoxHead", "num_classes": 3,
                               "fc_out_channels": 32}},
    "train_cfg": {"rpn_proposal": {"nms_pre": 300, "max_per_img": 100},
                  "rcnn": {"sampler": {"type": "RandomSampler", "num": 64}}},
    "test_cfg": {"rpn": {"nms_pre": 200, "max_per_img": 50}},
}


def tiny_batch() -> tuple[ImageBatch, DetTargets]:
    generator = torch.Generator().manual_seed(0)
    images = ImageBatch.from_tensor(torch.randn(2, 3, 128, 128, generator=generator))
    targets = DetTargets.from_lists(
        [torch.tensor([[10.0, 20.0, 60.0, 80.0], [50.0, 50.0, 120.0, 100.0]]),
         torch.tensor([[30.0, 30.0, 90.0, 110.0]])],
        [torch.tensor([0, 2]), torch.tensor([1])],
    )
    return images, targets


def test_config_derives_every_channel_from_the_neck() -> None:
    cfg = validate_tree(TINY, FasterRCNNConfig)
    assert cfg.neck.in_channels == [8, 16, 32, 64]  # ResNet-18, base 8
    assert cfg.rpn_head.in_channels == 16
    assert cfg.roi_head.bbox_roi_extractor.out_channels == 16
    assert cfg.roi_head.bbox_head.in_channels == 16
    assert cfg.rpn_head._derived == {"in_channels": "model.neck (FPN out_channels 16)"}
    assert cfg.roi_head.bbox_head._derived == {
        "in_channels": "model.roi_head.bbox_roi_extractor.out_channels"}


def test_config_rejects_channels_that_disagree() -> None:
    tree = {**TINY, "rpn_head": {**TINY["rpn_head"], "in_channels": 32}}
    with pytest.raises(ConfigError, match="rpn_head.in_channels = 32 disagrees with 16"):
        validate_tree(tree, FasterRCNNConfig)
    roi = TINY["roi_head"]
    tree = {**TINY, "roi_head": {**roi, "bbox_roi_extractor": {
        **roi["bbox_roi_extractor"], "out_channels": 8}}}
    with pytest.raises(ConfigError, match="out_channels = 8 disagrees with 16"):
        validate_tree(tree, FasterRCNNConfig)


def test_num_classes_is_found_where_a_two_stage_config_keeps_it() -> None:
    cfg = validate_tree(TINY, FasterRCNNConfig)
    assert num_classes_key(cfg) == "model.roi_head.bbox_head.num_classes"
    assert config_num_classes(cfg) == 3
    model = build_detector(cfg)
    assert num_classes_of(model) == 3
    assert detection_test_cfg(model) is model.roi_head.test_cfg
    assert model.roi_head.test_cfg.max_per_img == 100
    assert model.rpn_head.test_cfg.max_per_img == 50  # test_cfg.rpn reaches the RPN


def test_r50_preset_has_mmdetection_layout_and_torchvision_size() -> None:
    model = build_detector(load_config(PRESETS / "faster_rcnn_r50.toml").cfg.model)
    assert isinstance(model, FasterRCNN)
    keys = set(model.state_dict())
    for key in ("rpn_head.rpn_conv.weight", "rpn_head.rpn_cls.weight", "rpn_head.rpn_reg.bias",
                "roi_head.bbox_head.shared_fcs.0.weight", "roi_head.bbox_head.shared_fcs.1.weight",
                "roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_reg.weight",
                "neck.lateral_convs.0.conv.weight", "neck.fpn_convs.3.conv.weight"):
        assert key in keys, key
    assert model.roi_head.bbox_head.fc_cls.weight.shape == (81, 1024)  # 80 classes + background
    assert model.roi_head.bbox_head.fc_reg.weight.shape == (320, 1024)  # class-specific deltas
    ours = sum(p.numel() for p in model.parameters())
    # torchvision's model is the same network (ResNet-50, FPN with a max-pooled 5th level, a
    # one-conv RPN head with 3 anchors, two 1024 fc layers) except that its box predictor also
    # regresses the background class: 81 * 4 outputs instead of 80 * 4, i.e. 1024 * 4 + 4 more.
    # Random init uses plain BatchNorm2d (weights and biases are parameters, as ours).
    theirs = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81)
    assert ours == sum(p.numel() for p in theirs.parameters()) - (1024 * 4 + 4)


def test_loss_has_both_stages_terms_and_they_backpropagate() -> None:
    torch.manual_seed(0)
    model = build_detector(TINY)
    images, targets = tiny_batch()
    losses = model.loss(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc"}
    total = sum(v for k, v in losses.items() if k.startswith("loss"))
    assert torch.isfinite(total)
    total.backward()
    # both heads and the backbone get gradients; the RPN's through its own losses only
    assert model.rpn_head.rpn_cls.weight.grad.abs().sum() > 0
    assert model.roi_head.bbox_head.fc_cls.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_a_few_steps_lower_both_stages_classification_losses() -> None:
    # The box losses are not monotonic here: as the RPN improves, more proposals become RoI
    # positives and the RoI box loss first grows (measured: 0.07 -> 0.47 -> 0.34 in 30 steps).
    # The classification terms of both stages fall (0.69 -> 0.14 and 1.38 -> 0.40).
    torch.manual_seed(0)
    model = build_detector(TINY)
    images, targets = tiny_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        losses = model.loss(images, targets)
        total = sum(v for k, v in losses.items() if k.startswith("loss"))
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    assert history[-1]["loss_rpn_cls"] < 0.5 * history[0]["loss_rpn_cls"]
    assert history[-1]["loss_cls"] < 0.5 * history[0]["loss_cls"]
    assert history[-1]["acc"] > 80


def test_predict_gives_padded_detections_in_original_pixels() -> None:
    torch.manual_seed(0)
    model = build_detector(TINY).eval()
    with torch.no_grad():  # every proposal scores: the box head's scores pass score_thr
        model.rpn_head.rpn_cls.bias.fill_(2.0)
    images, _ = tiny_batch()
    proposals = model.predict_proposals(images)
    assert isinstance(proposals, Proposals)
    assert proposals.boxes.shape == (2, 50, 4)
    net = model.predict_batch(images, rescale=False)
    assert net.boxes.shape == (2, 100, 4) and net.num_dets.min() > 0
    # the same images presented as twice-downscaled originals: boxes come back doubled
    images.scale_factors = torch.full((2, 4), 0.5)
    scaled = model.predict_batch(images, rescale=True)
    assert torch.equal(scaled.num_dets, net.num_dets)
    assert torch.allclose(scaled.boxes, net.boxes * 2)
    dets = model.predict(images)
    assert [len(d) for d in dets] == net.num_dets.tolist()
    for d in dets:
        assert torch.all(d.scores[:-1] >= d.scores[1:])
        assert d.labels.min() >= 0 and d.labels.max() < 3


def test_train_cfg_false_builds_for_inference_and_loss_says_why() -> None:
    model = build_detector({**TINY, "train_cfg": False})
    assert model.train_cfg is None and model.roi_head.train_cfg is None
    images, targets = tiny_batch()
    with pytest.raises(ConfigError, match="train_cfg"):
        model.loss(images, targets)
    assert model.eval().predict_batch(images).boxes.shape[0] == 2


def test_bf16_autocast_and_channels_last_are_safe() -> None:
    # The train step and predict run under autocast and on channels_last weights and inputs,
    # as on a GPU (here on CPU, bf16): losses finite and float32, gradients everywhere,
    # channels_last predictions equal to the default layout's.
    torch.manual_seed(0)
    model = build_detector(TINY)
    images, targets = tiny_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.loss(images, targets)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    assert model.roi_head.bbox_head.shared_fcs[0].weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        model.rpn_head.rpn_cls.bias.fill_(2.0)
    reference = model.predict_batch(images)
    model = model.to(memory_format=torch.channels_last)
    images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
    channels_last = model.predict_batch(images)
    assert torch.equal(channels_last.num_dets, reference.num_dets)
    torch.testing.assert_close(channels_last.boxes, reference.boxes, rtol=0, atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.predict_batch(images)
    assert mixed.boxes.dtype == torch.float32 and int(mixed.num_dets.min()) > 0
