"""RetinaNet assembled: config derivation, state-dict layout of the R50 preset, a tiny train run,
prediction in original-image pixels."""

from __future__ import annotations

import pytest
import torch

import detcli
from detcli.config.loader import validate_tree
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.models.detectors import RetinaNet, RetinaNetConfig, SingleStageDetector
from detcli.structures.batch import DetTargets, ImageBatch

TINY = {
    "type": "RetinaNet",
    "backbone": {"type": "ResNet", "depth": 18, "base_channels": 8, "frozen_stages": 1},
    "neck": {"type": "FPN", "out_channels": 16, "start_level": 1, "add_extra_convs": "on_input",
             "num_outs": 5},
    "bbox_head": {"type": "RetinaHead", "num_classes": 3, "feat_channels": 16},
}
R50 = {
    "type": "RetinaNet",
    "backbone": {"type": "ResNet", "depth": 50, "frozen_stages": 1},
    "neck": {"type": "FPN", "out_channels": 256, "start_level": 1, "add_extra_convs": "on_input",
             "num_outs": 5},
    "bbox_head": {"type": "RetinaHead", "num_classes": 80},
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


def test_config_derives_channels_and_records_why() -> None:
    cfg = validate_tree(TINY, RetinaNetConfig)
    assert cfg.neck.in_channels == [8, 16, 32, 64]  # ResNet-18, base 8
    assert cfg.bbox_head.in_channels == 16
    assert cfg.neck._derived == {"in_channels": "model.backbone (ResNet depth 18)"}
    assert cfg.bbox_head._derived == {"in_channels": "model.neck (FPN out_channels 16)"}


def test_config_rejects_channels_that_disagree() -> None:
    tree = {**TINY, "neck": {**TINY["neck"], "in_channels": [8, 16, 32, 32]}}
    with pytest.raises(ConfigError, match=r"\[8, 16, 32, 32\] disagrees with \[8, 16, 32, 64\]"):
        validate_tree(tree, RetinaNetConfig)
    tree = {**TINY, "bbox_head": {**TINY["bbox_head"], "in_channels": 32}}
    with pytest.raises(ConfigError, match="= 32 disagrees with 16 derived from model.neck"):
        validate_tree(tree, RetinaNetConfig)
    assert validate_tree({**TINY, "bbox_head": {**TINY["bbox_head"], "in_channels": 16}},
                         RetinaNetConfig).bbox_head.in_channels == 16


def test_build_from_dict_and_config() -> None:
    model = build_detector(TINY)
    assert type(model) is RetinaNet and isinstance(model, SingleStageDetector)
    assert detcli.build_detector is build_detector
    single = build_detector({**TINY, "type": "SingleStageDetector"})
    assert type(single) is SingleStageDetector
    out = model(torch.zeros(1, 3, 128, 128))
    assert [tuple(x.shape) for x in out.cls_logits] == [(1, 27, s, s) for s in (16, 8, 4, 2, 1)]
    assert [tuple(x.shape) for x in out.bbox_deltas] == [(1, 36, s, s) for s in (16, 8, 4, 2, 1)]


def test_r50_state_dict_layout_is_mmdetection_s() -> None:
    model = build_detector(R50)
    state = model.state_dict()
    for key in [
        "backbone.conv1.weight", "backbone.bn1.running_var", "backbone.layer1.0.conv1.weight",
        "backbone.layer1.0.downsample.0.weight", "backbone.layer1.0.downsample.1.weight",
        "backbone.layer4.2.bn3.num_batches_tracked",
        "neck.lateral_convs.0.conv.weight", "neck.lateral_convs.2.conv.bias",
        "neck.fpn_convs.0.conv.weight", "neck.fpn_convs.3.conv.weight",
        "neck.fpn_convs.4.conv.bias",
        "bbox_head.cls_convs.0.conv.weight", "bbox_head.cls_convs.3.conv.bias",
        "bbox_head.reg_convs.3.conv.weight", "bbox_head.retina_cls.weight",
        "bbox_head.retina_cls.bias", "bbox_head.retina_reg.weight", "bbox_head.retina_reg.bias",
    ]:
        assert key in state, key
    assert tuple(state["neck.fpn_convs.3.conv.weight"].shape) == (256, 2048, 3, 3)  # on_input
    assert tuple(state["bbox_head.retina_cls.weight"].shape) == (720, 256, 3, 3)  # 9 anchors x 80
    assert len(state) == 354
    num_params = sum(p.numel() for p in model.parameters())
    assert num_params == 37_968_692
    assert abs(num_params - 37.97e6) / 37.97e6 < 0.005  # MMDetection's RetinaNet R50-FPN


def test_tiny_retinanet_loss_decreases() -> None:
    torch.manual_seed(0)
    model = build_detector(TINY)
    model.train()
    images, targets = tiny_batch()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.02, momentum=0.9)
    totals = []
    for _ in range(15):
        losses = model.loss(images, targets)
        assert set(losses) == {"loss_cls", "loss_bbox"}
        total = sum(losses.values())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        totals.append(total.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    assert all(b < a for a, b in zip(totals, totals[1:])), totals  # every step helps
    assert totals[-1] < 0.95 * totals[0], totals
    assert model.backbone.conv1.weight.grad is None  # frozen_stages = 1
    assert model.backbone.layer2[0].conv1.weight.grad is not None


def test_all_empty_batch_and_bf16_autocast_give_finite_losses() -> None:
    torch.manual_seed(0)
    model = build_detector(TINY)
    images, _ = tiny_batch()
    empty = DetTargets.from_lists([torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.long)] * 2)
    losses = model.loss(images, empty)
    sum(losses.values()).backward()
    assert losses["loss_bbox"].item() == 0.0 and torch.isfinite(losses["loss_cls"])
    assert model.bbox_head.retina_reg.weight.grad is not None
    _, targets = tiny_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.loss(images, targets)
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())


def test_predict_returns_original_image_pixels() -> None:
    torch.manual_seed(0)
    model = build_detector({**TINY, "test_cfg": {"score_thr": 0.0, "max_per_img": 20}})
    model.eval()
    tensor = torch.randn(1, 3, 128, 128)
    same = ImageBatch.from_tensor(tensor)
    halved = ImageBatch(tensor=tensor, img_shapes=[(128, 128)], ori_shapes=[(256, 64)],
                        scale_factors=torch.tensor([[0.25, 2.0, 0.25, 2.0]]))  # (sx, sy, sx, sy)
    ref = model.predict(same)[0]
    dets = model.predict(halved)[0]
    assert len(ref) == len(dets) == 20
    expected = ref.boxes / torch.tensor([0.25, 2.0, 0.25, 2.0])
    assert torch.allclose(dets.boxes, expected, atol=1e-4)
    assert dets.boxes[:, 2].max() <= 512 and dets.boxes[:, 3].max() <= 64
    assert torch.equal(dets.labels, ref.labels)
    assert torch.all(dets.scores[:-1] >= dets.scores[1:])
