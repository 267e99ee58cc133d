"""Make tests/fixtures/mmdet/rtmdet.pt: two tiny RTMDets' losses, assignments and predictions
computed by MMDetection 3.3 on the CPU, for tests/models/test_rtmdet_vs_mmdet.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/rtmdet.py

Two models, both rtmdet-tiny's layout (deepen_factor 0.167) at widen_factor 0.125 (stages of
16, 32, 64, 128 channels), PAFPN and head at 32 channels, 3 classes, BN (SyncBN off):

- ``tiny``: rtmdet_tiny_8xb32-300e_coco's settings (no objectness, raw distances, 1 x 1
  predictors, shared convs);
- ``variant``: depthwise-separable convs in the backbone and neck, objectness,
  ``exp_on_reg``, 3 x 3 predictors, ``channel_attention`` off and ``expand_ratio`` 0.25 in the
  backbone and neck -- the switches ``tiny`` leaves at one value.

Weights: the seeded synthetic state dict of tests/fixtures/mmdet/synthetic.py (classification
biases bumped, distances starting near two strides), the head's shared convs tied to level
0's values (:func:`tie_shared`), so the fixture stores names and shapes, not weights. Inputs:
two seeded images of one 256 x 320 batch (img_shape 256 x 320 and 224 x 288; the second's own
pad_shape is 224 x 288, so valid flags matter), three and two GT boxes. Recorded: per image,
the assigner's result on its valid points (gt index, IoU quality), the losses in train mode,
the detections in eval mode with and without rescaling. Predictions run first: a train-mode
forward updates BN's running statistics.
"""

from __future__ import annotations

import re
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

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "rtmdet.pt"
SEED = 21
NUM_CLASSES = 3
BATCH = (256, 320)
IMG_SHAPES = [(256, 320), (224, 288)]
PAD_SHAPES = [(256, 320), (224, 288)]
ORI_SHAPES = [(128, 160), (150, 192)]
GT = [
    [([20.0, 30.0, 120.0, 110.0], 0), ([150.0, 40.0, 300.0, 200.0], 1),
     ([60.0, 150.0, 140.0, 250.0], 2)],
    [([10.0, 10.0, 200.0, 150.0], 2), ([180.0, 100.0, 280.0, 220.0], 0)],
]
GAIN = 1.3  # He-like weights a little above 1: activations stay O(1) through the SiLU stack
# class logits spread over the classes; distances start near 2 strides (raw, or exp(0.7)), so
# the predicted boxes overlap the GT and the dynamic k is above 1
BIAS_OFFSETS = {f"bbox_head.rtm_cls.{level}.bias": [-3.0, -3.3, -3.6] for level in range(3)}
REG_BIAS = {"tiny": 2.0, "variant": 0.7}
WEIGHT_SCALES = {**{f"bbox_head.rtm_reg.{level}.weight": 0.3 for level in range(3)},
                 **{f"bbox_head.rtm_cls.{level}.weight": 6.0 for level in range(3)}}
VARIANTS = {
    "tiny": dict(backbone=dict(), neck=dict(),
                 head=dict(with_objectness=False, exp_on_reg=False, pred_kernel_size=1)),
    "variant": dict(backbone=dict(use_depthwise=True, channel_attention=False, expand_ratio=0.25),
                    neck=dict(use_depthwise=True, expand_ratio=0.25),
                    # MMDetection's head cannot share depthwise-separable convs: plain ones here
                    head=dict(with_objectness=True, exp_on_reg=True, pred_kernel_size=3)),
}
SHARED = re.compile(r"^bbox_head\.(cls|reg)_convs\.(\d+)\.(\d+)\.(.*conv\.weight|.*conv\.bias)$")


def bias_offsets(name: str) -> dict[str, list[float]]:
    reg = {f"bbox_head.rtm_reg.{level}.bias": [REG_BIAS[name]] * 4 for level in range(3)}
    return {**BIAS_OFFSETS, **reg}


def tie_shared(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The head's convs shared across levels: every level's copy gets level 0's value."""
    out = dict(weights)
    for key in weights:
        match = SHARED.match(key)
        if match and match.group(2) != "0":
            tower, _, i, rest = match.groups()
            out[key] = weights[f"bbox_head.{tower}_convs.0.{i}.{rest}"]
    return out


def config(name: str) -> Config:
    switches = VARIANTS[name]
    norm = dict(type="BN")
    act = dict(type="SiLU", inplace=True)
    return Config(dict(model=dict(
        type="RTMDet", use_syncbn=False,
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[0, 0, 0], std=[1, 1, 1],
                               bgr_to_rgb=False),
        backbone=dict(type="CSPNeXt", arch="P5", deepen_factor=0.167, widen_factor=0.125,
                      norm_cfg=norm, act_cfg=act, **switches["backbone"]),
        neck=dict(type="CSPNeXtPAFPN", in_channels=[32, 64, 128], out_channels=32,
                  num_csp_blocks=1, norm_cfg=norm, act_cfg=act, **switches["neck"]),
        bbox_head=dict(
            type="RTMDetSepBNHead", num_classes=NUM_CLASSES, in_channels=32, stacked_convs=2,
            feat_channels=32, share_conv=True, norm_cfg=norm, act_cfg=act,
            anchor_generator=dict(type="MlvlPointGenerator", offset=0, strides=[8, 16, 32]),
            bbox_coder=dict(type="DistancePointBBoxCoder"),
            loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
            loss_bbox=dict(type="GIoULoss", loss_weight=2.0), **switches["head"]),
        train_cfg=dict(assigner=dict(type="DynamicSoftLabelAssigner", topk=13),
                       allowed_border=-1, pos_weight=-1, debug=False),
        test_cfg=dict(nms_pre=30000, min_bbox_size=0, score_thr=0.001,
                      nms=dict(type="nms", iou_threshold=0.65), max_per_img=300))))


def scale_factor(i: int) -> tuple[float, float]:
    (h, w), (oh, ow) = IMG_SHAPES[i], ORI_SHAPES[i]
    return (w / ow, h / oh)


def data_samples() -> list[DetDataSample]:
    out = []
    for i, gts in enumerate(GT):
        sample = DetDataSample(metainfo=dict(
            img_shape=IMG_SHAPES[i], ori_shape=ORI_SHAPES[i], pad_shape=PAD_SHAPES[i],
            batch_input_shape=BATCH, scale_factor=scale_factor(i)))
        sample.gt_instances = InstanceData(bboxes=torch.tensor([b for b, _ in gts]),
                                           labels=torch.tensor([c for _, c in gts]))
        out.append(sample)
    return out


def predictions(model, x: torch.Tensor, rescale: bool) -> list[dict]:
    with torch.no_grad():
        results = model.predict(x, data_samples(), rescale=rescale)
    return [dict(boxes=r.pred_instances.bboxes.clone(), scores=r.pred_instances.scores.clone(),
                 labels=r.pred_instances.labels.clone()) for r in results]


def run(name: str) -> dict:
    torch.manual_seed(SEED)
    model = MODELS.build(config(name).model)
    model.init_weights()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    weights = tie_shared(synthetic_state_dict(shapes, SEED, bias_offsets(name), WEIGHT_SCALES,
                                              GAIN))
    model.load_state_dict(weights, strict=True)
    x = synthetic_images(2, *BATCH, IMG_SHAPES, SEED)

    model.eval()
    preds = {"rescale": predictions(model, x, True), "no_rescale": predictions(model, x, False)}

    assigned = []
    assign = model.bbox_head.assigner.assign

    def recording(pred_instances, gt_instances, gt_instances_ignore=None, **kwargs):
        result = assign(pred_instances, gt_instances, gt_instances_ignore, **kwargs)
        assigned.append(dict(gt_index=result.gt_inds.clone() - 1,
                             quality=result.max_overlaps.clone()))
        return result

    model.bbox_head.assigner.assign = recording
    model.train()
    losses = model.loss(x, data_samples())
    flat = {key: float(sum(value) if isinstance(value, (list, tuple)) else value)
            for key, value in losses.items()}
    return dict(shapes=shapes, bias_offsets=bias_offsets(name), losses=flat, assigned=assigned,
                predictions=preds)


def main() -> None:
    register_all_modules()
    x = synthetic_images(2, *BATCH, IMG_SHAPES, SEED)
    fixture = dict(
        seed=SEED, gain=GAIN, weight_scales=WEIGHT_SCALES,
        images_sum=float(x.double().sum()), images_abs_sum=float(x.double().abs().sum()),
        img_shapes=IMG_SHAPES, pad_shapes=PAD_SHAPES, ori_shapes=ORI_SHAPES,
        scale_factors=[scale_factor(i) for i in range(2)],
        gt_boxes=[[b for b, _ in gts] for gts in GT],
        gt_labels=[[c for _, c in gts] for gts in GT],
        models={name: run(name) for name in VARIANTS},
        mmdet_version=__import__("mmdet").__version__,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, OUT)
    for name, rec in fixture["models"].items():
        print(name, {k: round(v, 6) for k, v in rec["losses"].items()})
        for i, a in enumerate(rec["assigned"]):
            print(f"  image {i}: {int((a['gt_index'] >= 0).sum())} positives of "
                  f"{len(a['gt_index'])} valid points")
        for key, preds in rec["predictions"].items():
            print(f"  {key}: detections {[len(p['scores']) for p in preds]}, top scores "
                  f"{[round(float(p['scores'][0]), 4) for p in preds]}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
