"""Make tests/fixtures/mmdet/plugins.pt: MMCV's GeneralizedAttention and NonLocal2d plugins,
a ResNet carrying them, and MMDetection's FCOSHead with ``dcn_on_last_conv``, for
tests/models/test_plugins_vs_mmdet.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/plugins.py

Recorded, for each entry: the MMCV/MMDetection config, the state dict's key shapes in order,
the input shapes and the eval-mode outputs on ``seeded_input`` (tests/models/backbones/seeded.py;
FCOS level l with seed SEED + l) with the weights ``plugin_state(shapes, SEED)``
(tests/fixtures/mmdet/plugins_weights.py), so the tests rebuild both and compare; for the FCOS
head also its ``loss_by_feat`` on those outputs with the GT of ``FCOS_GT`` (image 64 x 80: a
small box whose points are positives of level 0 and a large one positive on both levels).
The FCOS head's last tower convs are mmcv's ``ModulatedDeformConv2dPack`` run on the
plain-torch kernel of ``dcn_kernel.py`` (written from mmcv's CUDA kernel, not torchvision's).
``names`` keeps the key shapes of MMDetection's full-size attention ResNet-50
(empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py's backbone).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

from mmcv.cnn.bricks import GeneralizedAttention, NonLocal2d  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from tests.fixtures.mmdet.plugins_weights import plugin_state  # noqa: E402
from tests.models.backbones.seeded import seeded_input  # noqa: E402
import dcn_kernel  # noqa: E402

dcn_kernel.install()

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "plugins.pt"
SEED = 24

ATTENTION_INPUT = (2, 16, 7, 9)
ATTENTION = {
    "attn1111_kv2": dict(num_heads=4, kv_stride=2, attention_type="1111"),
    "attn1101_q2_dim8_mag2": dict(num_heads=4, kv_stride=1, q_stride=2, attention_type="1101",
                                  position_embedding_dim=8, position_magnitude=2),
    "attn0010_saliency": dict(num_heads=4, kv_stride=2, attention_type="0010"),
    "attn0001_kv1": dict(num_heads=2, kv_stride=1, attention_type="0001"),
    "attn1010_heads3": dict(num_heads=3, kv_stride=2, attention_type="1010"),
    "attn0101_q2_kv2": dict(num_heads=2, kv_stride=2, q_stride=2, attention_type="0101"),
}

NON_LOCAL_INPUT = (2, 8, 6, 5)
NON_LOCAL = {
    "embedded_gaussian": dict(),
    "embedded_gaussian_noscale_sub": dict(use_scale=False, sub_sample=True),
    "gaussian": dict(mode="gaussian"),
    "gaussian_sub": dict(mode="gaussian", sub_sample=True),
    "dot_product_r4": dict(mode="dot_product", reduction=4),
    "concatenation": dict(mode="concatenation"),
    "concatenation_sub_bn": dict(mode="concatenation", sub_sample=True,
                                 norm_cfg=dict(type="BN")),
}

ATTN1111 = dict(cfg=dict(type="GeneralizedAttention", spatial_range=-1, num_heads=8,
                         attention_type="1111", kv_stride=2),
                stages=(False, False, True, True), position="after_conv2")
RESNET_INPUT = (1, 3, 48, 64)
RESNETS = {
    "resnet50_w16_attn1111_nonlocal": dict(type="ResNet", depth=50, base_channels=16, plugins=[
        ATTN1111,
        dict(cfg=dict(type="NonLocal2d", reduction=4, mode="dot_product", postfix=1),
             stages=(False, True, False, False), position="after_conv3")]),
}
NAMES = {"resnet50_attn1111": dict(type="ResNet", depth=50, plugins=[ATTN1111])}

FCOS_FEATS = [(1, 16, 8, 10), (1, 16, 4, 5)]
FCOS = dict(type="FCOSHead", num_classes=3, in_channels=16, feat_channels=16, stacked_convs=2,
            strides=[8, 16], regress_ranges=((-1, 64), (64, 1e8)), dcn_on_last_conv=True,
            norm_cfg=dict(type="GN", num_groups=4, requires_grad=True))
FCOS_IMAGE = (64, 80)  # (h, w): strides 8 and 16 over the feature maps
FCOS_GT = dict(boxes=[[6.0, 5.0, 38.0, 29.0], [1.0, 2.0, 79.0, 63.0]], labels=[0, 2])


def shapes_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def seeded_module(module: torch.nn.Module) -> dict[str, list[int]]:
    """Load ``plugin_state`` into ``module`` (eval mode); its key shapes, in order."""
    shapes = shapes_of(module)
    module.load_state_dict(plugin_state(shapes, SEED), strict=True)
    module.eval()
    return shapes


def block_entry(module: torch.nn.Module, kwargs: dict, input_shape: tuple) -> dict:
    shapes = seeded_module(module)
    with torch.no_grad():
        out = module(seeded_input(input_shape, SEED))
    return {"kwargs": kwargs, "input": input_shape, "shapes": shapes, "out": out}


def resnet_entry(cfg: dict) -> dict:
    model = MODELS.build(dict(cfg))
    shapes = seeded_module(model)
    with torch.no_grad():
        outs = [o.clone() for o in model(seeded_input(RESNET_INPUT, SEED))]
    return {"cfg": cfg, "input": RESNET_INPUT, "shapes": shapes, "outs": outs}


def fcos_entry() -> dict:
    head = MODELS.build(dict(FCOS))
    shapes = seeded_module(head)
    feats = [seeded_input(shape, SEED + level) for level, shape in enumerate(FCOS_FEATS)]
    cls_scores, bbox_preds, centernesses = head(feats)
    gt = InstanceData(bboxes=torch.tensor(FCOS_GT["boxes"]),
                      labels=torch.tensor(FCOS_GT["labels"]))
    meta = dict(img_shape=FCOS_IMAGE, pad_shape=FCOS_IMAGE, batch_input_shape=FCOS_IMAGE)
    losses = head.loss_by_feat(cls_scores, bbox_preds, centernesses, [gt], [meta])
    detach = lambda tensors: [t.detach() for t in tensors]  # noqa: E731
    return {"cfg": FCOS, "feats": FCOS_FEATS, "shapes": shapes,
            "cls_scores": detach(cls_scores), "bbox_preds": detach(bbox_preds),
            "centernesses": detach(centernesses), "image": FCOS_IMAGE, "gt": FCOS_GT,
            "losses": {k: float(v.detach()) for k, v in losses.items()}}


def main() -> None:
    register_all_modules()
    channels = ATTENTION_INPUT[1]
    fixture: dict[str, object] = {
        "seed": SEED,
        "attention": {name: block_entry(GeneralizedAttention(channels, **kwargs), kwargs,
                                        ATTENTION_INPUT) for name, kwargs in ATTENTION.items()},
        "non_local": {name: block_entry(NonLocal2d(NON_LOCAL_INPUT[1], **kwargs), kwargs,
                                        NON_LOCAL_INPUT) for name, kwargs in NON_LOCAL.items()},
        "resnets": {name: resnet_entry(cfg) for name, cfg in RESNETS.items()},
        "names": {name: {"cfg": cfg, "shapes": shapes_of(MODELS.build(dict(cfg)))}
                  for name, cfg in NAMES.items()},
        "fcos_dcn": fcos_entry(),
    }
    torch.save(fixture, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
