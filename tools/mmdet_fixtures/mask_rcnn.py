"""Make tests/fixtures/mmdet/mask_rcnn.pt: a tiny Mask R-CNN's losses and predictions computed
by MMDetection 3.3 on the CPU, for tests/models/roi_heads/test_mask_rcnn_vs_mmdet.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/mask_rcnn.py

The model: ResNet-18 at base_channels 16 (norm_eval: BN uses its running statistics in both
modes), FPN at 32 channels, RPN, Shared2FC box head (64) and FCN mask head (32 channels, 4 convs)
for 3 classes, MMDetection's mask-rcnn_r50_fpn settings otherwise. Weights: the seeded synthetic
state dict of tests/fixtures/mmdet/synthetic.py (classification biases bumped), so the fixture
stores the state dict's names and shapes and not the weights. Samplers budget more than the
candidates so nothing is drawn at random. Inputs: two seeded images of one 256 x 320 batch
(img_shape 256 x 320 and 224 x 288, original sizes 128 x 160 and 150 x 192), three and two
GT boxes with elliptical masks (padded to the batch's size, as MMDetection's pad_mask does).
(The images are made by synthetic_images from the seed; the fixture keeps their sums.)

Recorded: the losses in train mode; in eval mode, with and without rescaling, the boxes,
scores, labels, the 28 x 28 probability mask of each detection's class (a hook on the mask
head) and the pasted binary masks (bit-packed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
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
from mmdet.structures.mask import BitmapMasks  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from tests.fixtures.mmdet.synthetic import (  # noqa: E402
    ellipse_masks,
    synthetic_images,
    synthetic_state_dict,
)

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "mask_rcnn.pt"
SEED = 19
NUM_CLASSES = 3
BATCH = (256, 320)  # (H, W) of the padded batch
IMG_SHAPES = [(256, 320), (224, 288)]
ORI_SHAPES = [(128, 160), (150, 192)]
# (x1, y1, x2, y2) in network-input pixels, label
GT = [
    [([20.0, 30.0, 120.0, 110.0], 0), ([150.0, 40.0, 300.0, 200.0], 1),
     ([60.0, 150.0, 140.0, 250.0], 2)],
    [([10.0, 10.0, 200.0, 150.0], 2), ([180.0, 100.0, 280.0, 220.0], 0)],
]
# Weights: He-like at GAIN (activations stay O(1) through the tiny ResNet and FPN); the
# classifier's and the mask logits' weights scaled up and their biases offset against the mean
# logit each class gets on these images, so the detections have all three classes with
# spread scores and the 28 x 28 masks have confident pixels of both kinds.
GAIN = 0.8
WEIGHT_SCALES = {"roi_head.bbox_head.fc_cls.weight": 25.0,
                 "roi_head.mask_head.conv_logits.weight": 300.0}
BIAS_OFFSETS = {
    "roi_head.bbox_head.fc_cls.bias": [3.8, 7.1, -0.8, -1.0],
    "roi_head.mask_head.conv_logits.bias": [0.25, -9.0, -3.4],
}


def config() -> Config:
    conv = dict(type="SingleRoIExtractor", out_channels=32, featmap_strides=[4, 8, 16, 32])
    return Config(dict(model=dict(
        type="MaskRCNN",
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[0, 0, 0], std=[1, 1, 1],
                               bgr_to_rgb=False, pad_mask=True, pad_size_divisor=32),
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
            loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
        roi_head=dict(
            type="StandardRoIHead",
            bbox_roi_extractor=dict(conv, roi_layer=dict(type="RoIAlign", output_size=7,
                                                         sampling_ratio=0)),
            bbox_head=dict(
                type="Shared2FCBBoxHead", in_channels=32, fc_out_channels=64, roi_feat_size=7,
                num_classes=NUM_CLASSES,
                bbox_coder=dict(type="DeltaXYWHBBoxCoder", target_means=[0.0] * 4,
                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type="L1Loss", loss_weight=1.0)),
            mask_roi_extractor=dict(conv, roi_layer=dict(type="RoIAlign", output_size=14,
                                                         sampling_ratio=0)),
            mask_head=dict(type="FCNMaskHead", num_convs=4, in_channels=32,
                           conv_out_channels=32, num_classes=NUM_CLASSES,
                           loss_mask=dict(type="CrossEntropyLoss", use_mask=True,
                                          loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(
                assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.7, neg_iou_thr=0.3,
                              min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                # more than the anchors: every positive and negative is kept, none drawn
                sampler=dict(type="RandomSampler", num=100000, pos_fraction=0.5,
                             neg_pos_ub=-1, add_gt_as_proposals=False),
                allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=1000, max_per_img=300,
                              nms=dict(type="nms", iou_threshold=0.7), min_bbox_size=0),
            rcnn=dict(
                assigner=dict(type="MaxIoUAssigner", pos_iou_thr=0.5, neg_iou_thr=0.5,
                              min_pos_iou=0.5, match_low_quality=True, ignore_iof_thr=-1),
                # 400 > the 300 proposals + GT, and no image has 100 positives: none drawn
                sampler=dict(type="RandomSampler", num=400, pos_fraction=0.25,
                             neg_pos_ub=-1, add_gt_as_proposals=True),
                mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=1000, max_per_img=300, nms=dict(type="nms", iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type="nms", iou_threshold=0.5),
                      max_per_img=12, mask_thr_binary=0.5)))))


def images() -> torch.Tensor:
    return synthetic_images(2, *BATCH, IMG_SHAPES, SEED)


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
        boxes = [b for b, _ in gts]
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes), labels=torch.tensor([c for _, c in gts]),
            masks=BitmapMasks(ellipse_masks(boxes, *BATCH).numpy(), *BATCH))
        out.append(sample)
    return out


def predictions(model, x: torch.Tensor, rescale: bool) -> list[dict]:
    captured = []
    hook = model.roi_head.mask_head.register_forward_hook(
        lambda module, inputs, output: captured.append(output.detach()))
    with torch.no_grad():
        results = model.predict(x, data_samples(), rescale=rescale)
    hook.remove()
    out, start = [], 0
    logits = torch.cat(captured) if captured else torch.zeros(0, NUM_CLASSES, 28, 28)
    for res in results:
        inst = res.pred_instances
        num = len(inst)
        probs = logits[start:start + num].sigmoid()
        start += num
        probs = probs[torch.arange(num), inst.labels]  # (D, 28, 28): the class channel
        masks = inst.masks.cpu().numpy().astype(bool)  # (D, H, W)
        out.append(dict(boxes=inst.bboxes.clone(), scores=inst.scores.clone(),
                        labels=inst.labels.clone(), mask_probs=probs,
                        mask_shape=list(masks.shape),
                        masks_packed=torch.from_numpy(np.packbits(masks.reshape(-1)))))
    return out


def main() -> None:
    register_all_modules()
    torch.manual_seed(SEED)
    model = MODELS.build(config().model)
    model.init_weights()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    weights = synthetic_state_dict(shapes, SEED, BIAS_OFFSETS, WEIGHT_SCALES, GAIN)
    model.load_state_dict(weights, strict=True)
    x = images()

    model.train()
    sampled = []
    sample = model.roi_head.bbox_sampler.sample
    model.roi_head.bbox_sampler.sample = lambda *a, **k: sampled.append(sample(*a, **k)) or \
        sampled[-1]
    losses = model.loss(x, data_samples())
    num_pos = [len(r.pos_inds) for r in sampled]
    num_sampled = [len(r.pos_inds) + len(r.neg_inds) for r in sampled]
    assert max(num_pos) < 100, f"{num_pos} positives: the sampler would draw at random"
    flat = {}
    for key, value in losses.items():
        total = sum(value) if isinstance(value, (list, tuple)) else value  # RPN: per level
        flat[key] = float(total.detach())
    model.eval()
    fixture = dict(
        seed=SEED, gain=GAIN, shapes=shapes, bias_offsets=BIAS_OFFSETS,
        weight_scales=WEIGHT_SCALES,
        images_sum=float(x.double().sum()), images_abs_sum=float(x.double().abs().sum()),
        img_shapes=IMG_SHAPES, ori_shapes=ORI_SHAPES,
        scale_factors=[scale_factor(i) for i in range(2)],
        gt_boxes=[[b for b, _ in gts] for gts in GT],
        gt_labels=[[c for _, c in gts] for gts in GT],
        losses=flat, num_pos=num_pos, num_sampled=num_sampled,
        predictions={"rescale": predictions(model, x, True),
                     "no_rescale": predictions(model, x, False)},
        mmdet_version=__import__("mmdet").__version__,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, OUT)
    for key, value in flat.items():
        print(f"{key}: {value:.6f}")
    for name, preds in fixture["predictions"].items():
        for i, p in enumerate(preds):
            probs = p["mask_probs"]
            print(f"{name} image {i}: {len(p['scores'])} detections, scores "
                  f"{p['scores'][:5].tolist()}, labels {p['labels'].tolist()}, mask probs "
                  f">= 0.5: {float((probs >= 0.5).float().mean()) if len(probs) else 0:.3f}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
