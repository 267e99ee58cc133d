"""Make tests/fixtures/mmdet/deformable_detr.pt: a tiny Deformable DETR's losses (with the
auxiliary and two-stage ones), matchings and detections computed by MMDetection 3.3 on the
CPU, in its three variants, for tests/models/query_heads/test_deformable_detr_vs_mmdet.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/deformable_detr.py

The model: ResNet-18 at base_channels 16 (C3-C5: 32, 64, 128 channels; norm_eval), ChannelMapper
to D channels (1x1, GroupNorm 8, no activation, one stride-2 extra conv: 4 levels), a 2-layer
encoder and a 2-layer decoder (4 heads, 2 points per level, FFN 64, dropout 0), sine
positions (normalize, offset -0.5), 20 queries, DeformableDETRHead for 3 classes with
MMDetection's Deformable DETR losses and Hungarian costs, top 10 detections. D is 32 for
``plain`` and ``refine`` (``with_box_refine``) and 256 for ``twostage`` (refine + as_two_stage):
MMDetection's two-stage query embedding fixes 128 sine features per coordinate, which fits
only D = 256. Weights: tests/fixtures/mmdet/deformable_detr_weights.py (seeded; the fixture
stores names and shapes). Inputs: DETR's fixture's two images (256 x 320 batch, the second
224 x 288 with padding) and GT boxes.

Also written: tests/fixtures/mmdet/deformable_detr_r50_shapes.json, the state-dict names and
shapes of MMDetection's deformable-detr_r50_16xb2-50e_coco model and its -refine and
-refine-twostage variants, which det's presets must reproduce key for key.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

from mmengine.config import Config  # noqa: E402

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from tests.fixtures.mmdet.deformable_detr_weights import deformable_detr_state_dict  # noqa: E402
from tests.fixtures.mmdet.synthetic import synthetic_images  # noqa: E402
from tools.mmdet_fixtures.detr import BATCH, GT, IMG_SHAPES, ORI_SHAPES  # noqa: E402
from tools.mmdet_fixtures.detr import data_samples, predictions, scale_factor  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "deformable_detr.pt"
R50_SHAPES = OUT.with_name("deformable_detr_r50_shapes.json")
R50_CONFIGS = {"plain": "deformable-detr_r50_16xb2-50e_coco.py",
               "refine": "deformable-detr-refine_r50_16xb2-50e_coco.py",
               "twostage": "deformable-detr-refine-twostage_r50_16xb2-50e_coco.py"}
SEED = 23
NUM_CLASSES = 3
NUM_QUERIES = 20
VARIANTS = {"plain": dict(embed=32, with_box_refine=False, as_two_stage=False),
            "refine": dict(embed=32, with_box_refine=True, as_two_stage=False),
            "twostage": dict(embed=256, with_box_refine=True, as_two_stage=True)}
# The classifiers' biases offset so that the top scores spread over the classes.
BIAS_OFFSETS: dict[str, list[float]] = {}


def config(embed: int, with_box_refine: bool, as_two_stage: bool) -> Config:
    deform = dict(embed_dims=embed, num_heads=4, num_levels=4, num_points=2, dropout=0.0,
                  batch_first=True)
    ffn = dict(embed_dims=embed, feedforward_channels=64, ffn_drop=0.0)
    return Config(dict(model=dict(
        type="DeformableDETR", num_queries=NUM_QUERIES, num_feature_levels=4,
        with_box_refine=with_box_refine, as_two_stage=as_two_stage,
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[0, 0, 0], std=[1, 1, 1],
                               bgr_to_rgb=False, pad_size_divisor=1),
        backbone=dict(type="ResNet", depth=18, base_channels=16, num_stages=4,
                      out_indices=(1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True,
                      style="pytorch", init_cfg=None),
        neck=dict(type="ChannelMapper", in_channels=[32, 64, 128], kernel_size=1,
                  out_channels=embed, act_cfg=None, norm_cfg=dict(type="GN", num_groups=8),
                  num_outs=4),
        encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=deform, ffn_cfg=ffn)),
        decoder=dict(num_layers=2, return_intermediate=True, post_norm_cfg=None,
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=embed, num_heads=4,
                                                       dropout=0.0, batch_first=True),
                                    cross_attn_cfg=deform, ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=embed // 2, normalize=True, offset=-0.5),
        bbox_head=dict(
            type="DeformableDETRHead", num_classes=NUM_CLASSES, embed_dims=embed,
            sync_cls_avg_factor=True,
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=2.0),
            loss_bbox=dict(type="L1Loss", loss_weight=5.0),
            loss_iou=dict(type="GIoULoss", loss_weight=2.0)),
        train_cfg=dict(assigner=dict(type="HungarianAssigner", match_costs=[
            dict(type="FocalLossCost", weight=2.0),
            dict(type="BBoxL1Cost", weight=5.0, box_format="xywh"),
            dict(type="IoUCost", iou_mode="giou", weight=2.0)])),
        test_cfg=dict(max_per_img=10))))


def write_r50_shapes() -> None:
    configs = Path(__import__("mmdet").__file__).parent / ".mim" / "configs" / "deformable_detr"
    out = {}
    for name, file in R50_CONFIGS.items():
        cfg = Config.fromfile(str(configs / file))
        cfg.model.backbone.init_cfg = None
        with torch.device("meta"):
            model = MODELS.build(cfg.model)
        out[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
    R50_SHAPES.write_text(json.dumps(out, indent=0) + "\n")
    print(f"wrote {R50_SHAPES} ({', '.join(f'{k} {len(v)}' for k, v in out.items())} entries)")


def record(variant: dict, x: torch.Tensor) -> dict:
    torch.manual_seed(SEED)
    model = MODELS.build(config(**variant).model)
    model.init_weights()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    shared = not variant["with_box_refine"]
    model.load_state_dict(deformable_detr_state_dict(shapes, SEED, shared, BIAS_OFFSETS),
                          strict=True)
    matches = []  # per assigner call: layer-major then image, the encoder's last
    honest = model.bbox_head.assigner.assign

    def recording_assign(*args, **kwargs):
        result = honest(*args, **kwargs)
        matches.append(result.gt_inds.clone())
        return result

    model.bbox_head.assigner.assign = recording_assign
    model.train()
    losses = {k: float(v.detach()) for k, v in model.loss(x, data_samples()).items()}
    model.bbox_head.assigner.assign = honest
    model.eval()
    num_images = len(IMG_SHAPES)
    decoder = torch.stack(matches[:2 * num_images]).reshape(2, num_images, NUM_QUERIES)
    return dict(shapes=shapes, shared=shared, losses=losses, assigned_gt_inds=decoder,
                encoder_gt_inds=matches[2 * num_images:],
                predictions={"rescale": predictions(model, x, True),
                             "no_rescale": predictions(model, x, False)})


def main() -> None:
    register_all_modules()
    write_r50_shapes()
    x = synthetic_images(2, *BATCH, IMG_SHAPES, SEED)
    fixture = dict(
        seed=SEED, bias_offsets=BIAS_OFFSETS, images_sum=float(x.double().sum()),
        img_shapes=IMG_SHAPES, ori_shapes=ORI_SHAPES,
        scale_factors=[scale_factor(i) for i in range(2)],
        gt_boxes=[[b for b, _ in gts] for gts in GT], gt_labels=[[c for _, c in gts] for gts in GT],
        variants={name: record(variant, x) for name, variant in VARIANTS.items()},
        mmdet_version=__import__("mmdet").__version__)
    torch.save(fixture, OUT)
    for name, rec in fixture["variants"].items():
        print(name, {k: round(v, 5) for k, v in rec["losses"].items()})
        print("  decoder matches", rec["assigned_gt_inds"].tolist())
        for mode, preds in rec["predictions"].items():
            for i, p in enumerate(preds):
                print(f"  {mode} {i}: scores {[round(s, 3) for s in p['scores'].tolist()]} "
                      f"labels {p['labels'].tolist()}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
