"""The backbone presets (#24) resolve to MMDetection 3.3's configs: each differs from the R50
preset it extends in exactly the keys MMDetection's config changes, to MMDetection's values."""

from pathlib import Path

import torch

from detcli.config.diff import flatten
from detcli.config.loader import load_config
from detcli.engine.optim import param_groups
from detcli.models.build import build_detector

PRESETS = Path(__file__).resolve().parents[1] / "presets"


def resolved(preset: str) -> dict:
    return flatten(load_config(PRESETS / preset).resolved())


def changed(base: str, preset: str) -> dict:
    """{flattened key: (base's value, preset's value)} where the two resolved configs differ;
    None: the key is absent (a field of the other backbone)."""
    a, b = resolved(base), resolved(preset)
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def test_faster_rcnn_x101_64x4d_is_mmdetections():
    # faster-rcnn_x101-64x4d_fpn_1x_coco.py: the backbone's type, depth, groups, base_width and
    # checkpoint change; its other keys equal faster-rcnn_r50's
    assert changed("faster_rcnn_r50.toml", "faster_rcnn_x101_64x4d.toml") == {
        "model.backbone.type": ("ResNet", "ResNeXt"),
        "model.backbone.depth": (50, 101),
        "model.backbone.groups": (None, 64),
        "model.backbone.base_width": (None, 4),
        "model.backbone.init_cfg.checkpoint": ("torchvision://resnet50",
                                               "open-mmlab://resnext101_64x4d"),
    }


def test_faster_rcnn_r50_dcnv2_is_mmdetections():
    # dcnv2/faster-rcnn_r50-mdconv-c3-c5_fpn_1x_coco.py (false: "off" in TOML)
    assert changed("faster_rcnn_r50.toml", "faster_rcnn_r50_dcnv2.toml") == {
        "model.backbone.dcn": (False, None),
        "model.backbone.dcn.type": (None, "DCNv2"),
        "model.backbone.dcn.deform_groups": (None, 1),
        "model.backbone.dcn.fallback_on_stride": (None, False),
        "model.backbone.stage_with_dcn": ([False] * 4, [False, True, True, True]),
    }


PYCLS_NORM = {"mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395], "to_rgb": False}
# regnet/retinanet_regnetx-3.2GF_fpn_1x_coco.py with RegNet's class defaults filled in
REGNET_MMDET = {
    "model.backbone.type": "RegNet", "model.backbone.arch": "regnetx_3.2gf",
    "model.backbone.in_channels": 3, "model.backbone.stem_channels": 32,
    "model.backbone.base_channels": 32, "model.backbone.strides": [2, 2, 2, 2],
    "model.backbone.dilations": [1, 1, 1, 1], "model.backbone.out_indices": [0, 1, 2, 3],
    "model.backbone.frozen_stages": 1, "model.backbone.norm_cfg.type": "BN",
    "model.backbone.norm_cfg.requires_grad": True, "model.backbone.norm_eval": True,
    "model.backbone.style": "pytorch", "model.backbone.zero_init_residual": True,
    "model.backbone.init_cfg.type": "Pretrained",
    "model.backbone.init_cfg.checkpoint": "open-mmlab://regnetx_3.2gf",
    "model.neck.type": "FPN", "model.neck.in_channels": [96, 192, 432, 1008],
    "model.neck.out_channels": 256, "model.neck.num_outs": 5, "model.neck.start_level": 1,
    "model.neck.add_extra_convs": "on_input",
    "optimizer.type": "SGD", "optimizer.lr": 0.02, "optimizer.momentum": 0.9,
    "optimizer.weight_decay": 0.00005,
    "optimizer_config.grad_clip.max_norm": 35.0, "optimizer_config.grad_clip.norm_type": 2.0,
    **{f"{where}.{k}": v for where in ("data.train.pipeline[4]",
                                       "data.val.pipeline[1].transforms[2]",
                                       "data.test.pipeline[1].transforms[2]")
       for k, v in PYCLS_NORM.items()},
}


def test_retinanet_regnetx_3_2gf_is_mmdetections():
    values = resolved("retinanet_regnetx_3_2gf.toml")
    assert {k: values.get(k) for k in REGNET_MMDET} == REGNET_MMDET
    # nothing else differs from the RetinaNet base (beyond ResNet's keys, gone with its type)
    gone = {k for k, (_, new) in changed("retinanet_r50.toml",
                                         "retinanet_regnetx_3_2gf.toml").items() if new is None}
    assert all(k.startswith(("model.backbone.", "optimizer_config.grad_clip")) for k in gone)
    assert set(changed("retinanet_r50.toml", "retinanet_regnetx_3_2gf.toml")) - gone <= \
        set(REGNET_MMDET)


def test_retinanet_mobilenetv2_keeps_retinanets_strides():
    diff = changed("retinanet_r50.toml", "retinanet_mobilenetv2.toml")
    assert diff["model.neck.in_channels"] == ([256, 512, 1024, 2048], [32, 96, 1280])
    assert diff["model.neck.start_level"] == (1, 0)
    assert not any(k.startswith(("model.bbox_head", "data.", "optimizer")) for k in diff)
    cfg = load_config(PRESETS / "retinanet_mobilenetv2.toml",
                      overrides=["model.backbone.init_cfg=false", "model.bbox_head.num_classes=3"]).cfg
    model = build_detector(cfg.model).eval()
    feats = model.neck(model.backbone(torch.randn(1, 3, 128, 128)))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]


SWIN_URL = ("https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
            "swin_tiny_patch4_window7_224.pth")
# swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py with SwinTransformer's class defaults filled in
SWIN_MMDET = {
    "model.backbone.type": "SwinTransformer", "model.backbone.pretrain_img_size": 224,
    "model.backbone.in_channels": 3, "model.backbone.embed_dims": 96,
    "model.backbone.patch_size": 4, "model.backbone.window_size": 7,
    "model.backbone.mlp_ratio": 4, "model.backbone.depths": [2, 2, 6, 2],
    "model.backbone.num_heads": [3, 6, 12, 24], "model.backbone.strides": [4, 2, 2, 2],
    "model.backbone.out_indices": [0, 1, 2, 3], "model.backbone.qkv_bias": True,
    "model.backbone.qk_scale": False, "model.backbone.patch_norm": True,
    "model.backbone.drop_rate": 0.0, "model.backbone.attn_drop_rate": 0.0,
    "model.backbone.drop_path_rate": 0.2, "model.backbone.use_abs_pos_embed": False,
    "model.backbone.with_cp": False, "model.backbone.convert_weights": True,
    "model.backbone.frozen_stages": -1, "model.backbone.init_cfg.type": "Pretrained",
    "model.backbone.init_cfg.checkpoint": SWIN_URL,
    "model.neck.in_channels": [96, 192, 384, 768],
    "optimizer.type": "AdamW", "optimizer.lr": 0.0001, "optimizer.betas": [0.9, 0.999],
    "optimizer.eps": 1e-8, "optimizer.weight_decay": 0.05,
    **{f"optimizer.paramwise_cfg.custom_keys.{key}.{mult}": value
       for key in ("absolute_pos_embed", "relative_position_bias_table", "norm")
       for mult, value in (("decay_mult", 0.0), ("lr_mult", 1.0))},
    "optimizer.paramwise_cfg.norm_decay_mult": False,
    "optimizer.paramwise_cfg.bias_decay_mult": False,
    "optimizer.paramwise_cfg.bias_lr_mult": False,
    # LinearLR(start_factor=0.001, by_epoch=False, begin=0, end=1000), MultiStepLR([8, 11])
    "lr_config.warmup": "linear", "lr_config.warmup_iters": 999,
    "lr_config.warmup_ratio": 0.001, "lr_config.step": [8, 11], "lr_config.gamma": 0.1,
    "runner.max_epochs": 12,
}


def test_mask_rcnn_swin_t_is_mmdetections():
    values = resolved("mask_rcnn_swin_t.toml")
    assert {k: values.get(k) for k in SWIN_MMDET} == SWIN_MMDET
    diff = changed("mask_rcnn_r50.toml", "mask_rcnn_swin_t.toml")
    gone = {k for k, (_, new) in diff.items() if new is None}  # ResNet's and SGD's keys
    assert all(k.startswith(("model.backbone.", "optimizer.")) for k in gone)
    assert set(diff) - gone <= set(SWIN_MMDET) | {"optimizer.paramwise_cfg"}


def test_mask_rcnn_swin_t_decay_spares_norms_and_bias_tables():
    cfg = load_config(PRESETS / "mask_rcnn_swin_t.toml",
                      overrides=["model.backbone.init_cfg=false"]).cfg
    with torch.device("meta"):  # names and shapes only
        model = build_detector(cfg.model)
    decay = {name: group["weight_decay"] for group in param_groups(
        model, cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.optimizer.paramwise_cfg)
        for name in group["names"]}
    block = "backbone.stages.2.blocks.5."
    assert decay[block + "attn.w_msa.relative_position_bias_table"] == 0.0
    assert decay[block + "norm1.weight"] == decay["backbone.norm3.bias"] == 0.0
    assert decay["backbone.stages.0.downsample.norm.weight"] == 0.0
    assert decay[block + "attn.w_msa.qkv.weight"] == decay[block + "ffn.layers.1.bias"] == 0.05
    assert decay["neck.lateral_convs.0.conv.weight"] == 0.05
    with torch.device("meta"):
        feats = model.neck(model.backbone.eval()(torch.randn(1, 3, 64, 96)))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 16, 24), (256, 8, 12), (256, 4, 6),
                                                   (256, 2, 3), (256, 1, 2)]


def test_retinanet_mobilenetv3_differs_from_v2_in_the_backbone_only():
    diff = changed("retinanet_mobilenetv2.toml", "retinanet_mobilenetv3.toml")
    assert diff["model.neck.in_channels"] == ([32, 96, 1280], [40, 112, 960])
    assert diff["model.backbone.init_cfg.checkpoint"] == ("torchvision://mobilenet_v2",
                                                          "torchvision://mobilenet_v3_large")
    assert all(k.startswith("model.backbone.") for k in set(diff) - {"model.neck.in_channels"})
    cfg = load_config(PRESETS / "retinanet_mobilenetv3.toml",
                      overrides=["model.backbone.init_cfg=false"]).cfg
    model = build_detector(cfg.model).eval()
    feats = model.neck(model.backbone(torch.randn(1, 3, 128, 128)))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
