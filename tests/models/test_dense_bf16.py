"""RetinaNet, FCOS and ATSS under bf16 autocast and channels_last, as they run on a GPU (here
on the CPU, whose autocast also casts convolutions to bf16): losses finite and float32,
gradients reach the first trained layer, detections float32, and channels_last detections
equal to the default layout's. Faster R-CNN's twin is in test_faster_rcnn.py."""

from __future__ import annotations

import pytest
import torch

from detcli.config.loader import load_config
from detcli.models.build import build_detector
from detcli.structures.batch import DetTargets, ImageBatch

# preset, classifier conv (its bias makes scores pass score_thr: detections to compare)
SMALL = ["model.backbone.init_cfg=false", "model.backbone.base_channels=8",
         "model.neck.out_channels=32", "model.bbox_head.feat_channels=32",
         "model.bbox_head.stacked_convs=1"]
FAMILIES = [("retinanet_tiny_synth", "retina_cls"), ("fcos_tiny_synth", "conv_cls"),
            ("atss_tiny_synth", "atss_cls")]


def tiny_batch() -> tuple[ImageBatch, DetTargets]:
    generator = torch.Generator().manual_seed(0)
    images = ImageBatch.from_tensor(torch.randn(2, 3, 128, 128, generator=generator))
    targets = DetTargets.from_lists(
        [torch.tensor([[10.0, 20.0, 60.0, 80.0], [50.0, 50.0, 120.0, 100.0]]),
         torch.tensor([[30.0, 30.0, 90.0, 110.0]])],
        [torch.tensor([0, 2]), torch.tensor([1])])
    return images, targets


@pytest.mark.parametrize("preset, classifier", FAMILIES)
def test_bf16_autocast_and_channels_last_are_safe(preset: str, classifier: str) -> None:
    torch.manual_seed(0)
    model = build_detector(load_config(preset, SMALL).cfg.model)
    model.train()
    images, targets = tiny_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.loss(images, targets)
    assert set(losses) >= {"loss_cls", "loss_bbox"}
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values()), losses
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    first = next(p for p in model.neck.parameters() if p.requires_grad)
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        getattr(model.bbox_head, classifier).bias.fill_(0.0)  # scores about 0.5
    reference = model.predict_batch(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = model.predict_batch(images)
    assert mixed.boxes.dtype == torch.float32 and mixed.scores.dtype == torch.float32
    assert int(mixed.num_dets.min()) > 0 and torch.isfinite(mixed.boxes).all()
    model = model.to(memory_format=torch.channels_last)
    images.tensor = images.tensor.contiguous(memory_format=torch.channels_last)
    channels_last = model.predict_batch(images)
    assert torch.equal(channels_last.num_dets, reference.num_dets)
    torch.testing.assert_close(channels_last.boxes, reference.boxes, rtol=0, atol=1e-3)
