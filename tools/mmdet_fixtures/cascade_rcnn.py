"""Make tests/fixtures/mmdet/cascade_rcnn.pt: a tiny Cascade R-CNN's per-stage losses and
detections computed by MMDetection 3.3 on the CPU, for
tests/models/roi_heads/test_cascade_vs_mmdet.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/cascade_rcnn.py

The model: ResNet-18 at base_channels 16 (norm_eval), FPN at 32 channels, RPN, and a 3-stage
CascadeRoIHead with Shared2FC box heads (64) for 3 classes, MMDetection's
cascade-rcnn_r50_fpn settings otherwise (stage IoUs 0.5 / 0.6 / 0.7, stage loss weights
1 / 0.5 / 0.25, coder stds shrinking per stage, SmoothL1 box losses) -- except that stage 1
regresses per class (``reg_class_agnostic = False``), so both ways of reading a stage's deltas
(by GT class on positives, by best foreground score elsewhere) are exercised. Weights: the
seeded synthetic state dict of tests/fixtures/mmdet/synthetic.py (classification weights
scaled, biases offset). Samplers budget more than the candidates, so nothing is drawn at
random. Inputs: two seeded images of one 256 x 320 batch (img_shape 256 x 320 and 224 x 288,
original sizes 128 x 160 and 150 x 192) with six and four GT boxes, the small ones about the
size of the RPN's 32-pixel anchors so that proposals, not only the GT boxes the samplers add,
come out positive at every stage.

Also written: MMDetection's own cascade-rcnn_r50_fpn_1x_coco.py model section, resolved, as
JSON (tests/models/roi_heads/test_cascade_presets.py checks cascade_rcnn_r50.toml against it).

Recorded: the losses in train mode (per stage: s0.loss_cls, s0.loss_bbox, s0.acc, ...); in
eval mode, with and without rescaling, the boxes, scores and labels; and the boxes each
stage pools at test time for the first proposals (a hook on each stage's extractor).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

from mmengine.config import Config  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402

from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from tests.fixtures.mmdet.synthetic import synthetic_images, synthetic_state_dict  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "cascade_rcnn.pt"
# MMDetection 3.3's cascade-rcnn_r50_fpn_1x_coco model section, resolved (the preset test)
CONFIG_OUT = ROOT / "tests" / "fixtures" / "mmdet" / "cascade_rcnn_r50_fpn_1x_coco.json"
SEED = 20
NUM_CLASSES = 3
BATCH = (256, 320)  # (H, W) of the padded batch
IMG_SHAPES = [(256, 320), (224, 288)]
ORI_SHAPES = [(128, 160), (150, 192)]
GT = [
    [([20.0, 30.0, 120.0, 110.0], 0), ([150.0, 40.0, 300.0, 200.0], 1),
     ([60.0, 150.0, 140.0, 250.0], 2), ([200.0, 210.0, 232.0, 242.0], 1),
     ([250.0, 20.0, 290.0, 52.0], 0), ([8.0, 200.0, 40.0, 240.0], 2)],
    [([10.0, 10.0, 200.0, 150.0], 2), ([180.0, 100.0, 280.0, 220.0], 0),
     ([40.0, 170.0, 72.0, 202.0], 1), ([230.0, 20.0, 270.0, 60.0], 0)],
]
STDS = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
AGNOSTIC = [True, False, True]
IOUS = [0.5, 0.6, 0.7]
STAGE_LOSS_WEIGHTS = [1.0, 0.5, 0.25]
POOLED_ROWS = 8  # the test-time boxes of each stage recorded for the first rows
GAIN = 0.8
WEIGHT_SCALES = {f"roi_head.bbox_head.{t}.fc_cls.weight": 25.0 for t in range(3)}
WEIGHT_SCALES.update({f"roi_head.bbox_head.{t}.fc_reg.weight": 4.0 for t in range(3)})
BIAS_OFFSETS = {f"roi_head.bbox_head.{t}.fc_cls.bias": [3.0, 2.0, 1.0, 2.5] for t in range(3)}


def box_head(stage: int) -> dict:
    return dict(
        type="Shared2FCBBoxHead", in_channels=32, fc_out_channels=64, roi_feat_size=7,
        num_classes=NUM_CLASSES,
        bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                        target_stds=STDS[stage]),
        reg_class_agnostic=AGNOSTIC[stage],
        loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
        loss_bbox=dict(type="SmoothL1Loss", beta=1.0, loss_weight=1.0))


def stage_train_cfg(stage: int) -> dict:
    iou = IOUS[stage]
    return dict(
        assigner=dict(type="MaxIoUAssigner", pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                      match_low_quality=False, ignore_iof_thr=-1),
        # more than the candidates: every positive and negative is kept, none drawn
        sampler=dict(type="RandomSampler", num=4096, pos_fraction=0.5, neg_pos_ub=-1,
                     add_gt_as_proposals=True),
        pos_weight=-1, debug=False)


def config() -> Config:
    return Config(dict(model=dict(
        type="CascadeRCNN",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[0, 0, 0], std=[1, 1, 1],
                               bgr_to_rgb=False, pad_size_divisor=32),
        backbone=dict(type="ResNet", depth=18, base_channels=16, num_stages=4,
                      out_indices=(0, 1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True,
                      style="pytorch", init_cfg=None),
        neck=dict(type="FPN", in_channels=[16, 32, 64, 128], out_channels=32, num_outs=5),
        rpn_head=dict(
            type="RPNHead", in_channels=32, feat_channels=32,
            anchor_generator=dict(type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type="SmoothL1Loss", beta=1.0 / 9.0, loss_weight=1.0)),
        roi_head=dict(
            type="CascadeRoIHead", num_stages=3, stage_loss_weights=STAGE_LOSS_WEIGHTS,
            bbox_roi_extractor=dict(type="SingleRoIExtractor", out_channels=32,
                                    featmap_strides=[4, 8, 16, 32],
                                    roi_layer=dict(type="RoIAlign", output_size=7,
                                                   sampling_ratio=0)),
            bbox_head=[box_head(t) for t in range(3)]),
        train_cfg=dict(
            rpn=dict(
                assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3,
                              min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                sampler=dict(type="RandomSampler", num=100000, pos_fraction=0.5,
                             neg_pos_ub=-1, add_gt_as_proposals=False),
                allowed_border=0, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=2000, max_per_img=1000,
                              nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=[stage_train_cfg(t) for t in range(3)]),
        test_cfg=dict(
            rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type="nms", iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=20)))))


def scale_factor(i: int) -> tuple[float, float]:
    """(w_scale, h_scale): network input / original."""
    (h, w), (oh, ow) = IMG_SHAPES[i], ORI_SHAPES[i]
    return (w / ow, h / oh)


def data_samples() -> list[DetDataSample]:
    out = []
    for i, gts in enumerate(GT):
        sample = DetDataSample(metainfo=dict(
            img_shape=IMG_SHAPES[i], ori_shape=ORI_SHAPES[i], pad_shape=BATCH,
            batch_input_shape=BATCH, scale_factor=scale_factor(i)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([b for b, _ in gts]),
                                           labels=torch.tensor([c for _, c in gts]))
        out.append(sample)
    return out


def predictions(model, x: torch.Tensor, rescale: bool) -> tuple[list[dict], list[torch.Tensor]]:
    """Detections per image, and per stage the first rows of the RoIs it pooled."""
    pooled: list[torch.Tensor] = []
    hooks = [extractor.register_forward_hook(
        lambda module, inputs, output: pooled.append(inputs[1][:POOLED_ROWS].detach().clone()))
        for extractor in model.roi_head.bbox_roi_extractor]
    with torch.no_grad():
        results = model.predict(x, data_samples(), rescale=rescale)
    for hook in hooks:
        hook.remove()
    out = [dict(boxes=res.pred_instances.bboxes.clone(), scores=res.pred_instances.scores.clone(),
                labels=res.pred_instances.labels.clone()) for res in results]
    return out, pooled


def write_reference_config() -> None:
    """The model section of MMDetection's own cascade-rcnn_r50_fpn_1x_coco.py, its _base_
    chain resolved (tuples as lists), minus the data_preprocessor (det normalises in the
    pipeline)."""
    import json

    import mmdet

    path = (Path(mmdet.__file__).parent / ".mim" / "configs" / "cascade_rcnn"
            / "cascade-rcnn_r50_fpn_1x_coco.py")
    model = Config.fromfile(str(path)).to_dict()["model"]
    model.pop("data_preprocessor")
    CONFIG_OUT.write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {CONFIG_OUT}")


def main() -> None:
    write_reference_config()
    register_all_modules()
    torch.manual_seed(SEED)
    model = MODELS.build(config().model)
    model.init_weights()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    weights = synthetic_state_dict(shapes, SEED, BIAS_OFFSETS, WEIGHT_SCALES, GAIN)
    model.load_state_dict(weights, strict=True)
    x = synthetic_images(2, *BATCH, IMG_SHAPES, SEED)

    model.train()
    losses = model.loss(x, data_samples())
    flat = {}
    for key, value in losses.items():
        total = sum(value) if isinstance(value, (list, tuple)) else value  # RPN: per level
        flat[key] = float(total.detach())
    model.eval()
    rescaled, pooled = predictions(model, x, True)
    unscaled, _ = predictions(model, x, False)
    fixture = dict(
        seed=SEED, gain=GAIN, shapes=shapes, bias_offsets=BIAS_OFFSETS,
        weight_scales=WEIGHT_SCALES,
        images_sum=float(x.double().sum()), images_abs_sum=float(x.double().abs().sum()),
        img_shapes=IMG_SHAPES, ori_shapes=ORI_SHAPES,
        scale_factors=[scale_factor(i) for i in range(2)],
        gt_boxes=[[b for b, _ in gts] for gts in GT],
        gt_labels=[[c for _, c in gts] for gts in GT],
        losses=flat,
        predictions={"rescale": rescaled, "no_rescale": unscaled},
        stage_rois=pooled,  # per stage (R, 5): [image, x1, y1, x2, y2] of the first rows
        mmdet_version=__import__("mmdet").__version__,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, OUT)
    for key, value in flat.items():
        print(f"{key}: {value:.6f}")
    for name, preds in fixture["predictions"].items():
        for i, p in enumerate(preds):
            print(f"{name} image {i}: {len(p['scores'])} detections, scores "
                  f"{[round(s, 3) for s in p['scores'][:8].tolist()]}, labels "
                  f"{p['labels'].tolist()}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
