"""Make tests/fixtures/mmdet/cascade_mask_rcnn.pt: a tiny Cascade Mask R-CNN's per-stage losses
and predictions computed by MMDetection 3.3 on the CPU, for
tests/models/roi_heads/test_cascade_mask_rcnn_vs_mmdet.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/cascade_mask_rcnn.py

The model: tools/mmdet_fixtures/cascade_rcnn.py's tiny Cascade R-CNN (ResNet-18 at 16 base
channels, FPN 32, three box stages, stage 1 regressing per class), with the same seed, GT boxes,
images and box weights, plus MMDetection's cascade-mask-rcnn_r50_fpn mask branch at 32 channels:
one RoIAlign 14 x 14 extractor config and one FCNMaskHead config (4 convs), each built once
per stage, ``mask_size`` 28 in every stage's train_cfg. Each GT box holds its inscribed ellipse
as its mask (padded to the batch, as MMDetection's ``pad_mask``). The RPN keeps 300 training
proposals and each stage samples up to 400 RoIs, a quarter positive at most: more than the
candidates and their positives, so nothing is drawn at random and det's mask branch reads 100
slots per image and stage. The mask heads' logits are scaled and their biases offset (per
stage, so the stages' masks differ and their average is not any one of them).

Also written: MMDetection's own cascade-mask-rcnn_r50_fpn_1x_coco.py model section, resolved, as
JSON (tests/models/roi_heads/test_cascade_presets.py checks cascade_mask_rcnn_r50.toml with it).

Recorded: the losses in train mode (s{t}.loss_mask among them) and each stage's positives per
image; in eval mode, with and without rescaling, the boxes, scores and labels, the 28 x 28
probability of each detection's class averaged over the stages (hooks on every stage's mask
head: the mean of their sigmoids, as ``predict_mask`` merges them) and the pasted binary masks
(bit-packed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

import cascade_rcnn as box  # noqa: E402  (the box model: tools/mmdet_fixtures/cascade_rcnn.py)
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

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "cascade_mask_rcnn.pt"
CONFIG_OUT = ROOT / "tests" / "fixtures" / "mmdet" / "cascade_mask_rcnn_r50_fpn_1x_coco.json"
MAX_PER_IMG = 6  # detections per image: keeps the fixture's pasted masks small
NUM_PROPOSALS = 1000
SAMPLER = dict(type="RandomSampler", num=1100, pos_fraction=0.1, neg_pos_ub=-1,
               add_gt_as_proposals=True)
MAX_POS = int(SAMPLER["num"] * SAMPLER["pos_fraction"])  # det's mask slots per image
WEIGHT_SCALES = dict(box.WEIGHT_SCALES)
WEIGHT_SCALES.update({f"roi_head.mask_head.{t}.conv_logits.weight": 300.0 for t in range(3)})
BIAS_OFFSETS = dict(box.BIAS_OFFSETS)
BIAS_OFFSETS.update({
    "roi_head.mask_head.0.conv_logits.bias": [0.0, -6.0, -3.0],
    "roi_head.mask_head.1.conv_logits.bias": [2.0, -8.0, -1.0],
    "roi_head.mask_head.2.conv_logits.bias": [-1.0, -5.0, -4.0],
})


def config() -> Config:
    """cascade_rcnn.py's model with the mask branch, fewer proposals and MAX_PER_IMG."""
    cfg = box.config()
    model = cfg.model
    model.data_preprocessor.pad_mask = True
    model.roi_head.mask_roi_extractor = dict(
        type="SingleRoIExtractor", out_channels=32, featmap_strides=[4, 8, 16, 32],
        roi_layer=dict(type="RoIAlign", output_size=14, sampling_ratio=0))
    model.roi_head.mask_head = dict(
        type="FCNMaskHead", num_convs=4, in_channels=32, conv_out_channels=32,
        num_classes=box.NUM_CLASSES,
        loss_mask=dict(type="CrossEntropyLoss", use_mask=True, loss_weight=1.0))
    model.train_cfg.rpn_proposal.max_per_img = NUM_PROPOSALS
    for stage in model.train_cfg.rcnn:
        stage.sampler = dict(SAMPLER)
        stage.mask_size = 28
    model.test_cfg.rpn.max_per_img = NUM_PROPOSALS
    model.test_cfg.rcnn.max_per_img = MAX_PER_IMG
    model.test_cfg.rcnn.mask_thr_binary = 0.5
    return cfg


def data_samples() -> list[DetDataSample]:
    out = []
    for i, gts in enumerate(box.GT):
        sample = DetDataSample(metainfo=dict(
            img_shape=box.IMG_SHAPES[i], ori_shape=box.ORI_SHAPES[i], pad_shape=box.BATCH,
            batch_input_shape=box.BATCH, scale_factor=box.scale_factor(i)))
        boxes = [b for b, _ in gts]
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor(boxes), labels=torch.tensor([c for _, c in gts]),
            masks=BitmapMasks(ellipse_masks(boxes, *box.BATCH).numpy(), *box.BATCH))
        out.append(sample)
    return out


def predictions(model, x: torch.Tensor, rescale: bool) -> list[dict]:
    """Detections per image, with each one's class probability averaged over the stages."""
    captured: list[list[torch.Tensor]] = [[] for _ in model.roi_head.mask_head]
    hooks = [head.register_forward_hook(
        lambda module, inputs, output, t=t: captured[t].append(output.detach()))
        for t, head in enumerate(model.roi_head.mask_head)]
    with torch.no_grad():
        results = model.predict(x, data_samples(), rescale=rescale)
    for hook in hooks:
        hook.remove()
    # per stage one call on every detection of the batch: (D_all, K, 28, 28), averaged
    mean_probs = torch.stack([torch.cat(c).sigmoid() for c in captured]).mean(dim=0)
    out, start = [], 0
    for res in results:
        inst = res.pred_instances
        num = len(inst)
        probs = mean_probs[start:start + num][torch.arange(num), inst.labels]  # (D, 28, 28)
        start += num
        masks = inst.masks.cpu().numpy().astype(bool)  # (D, H, W)
        out.append(dict(boxes=inst.bboxes.clone(), scores=inst.scores.clone(),
                        labels=inst.labels.clone(), mask_probs=probs,
                        mask_shape=list(masks.shape),
                        masks_packed=torch.from_numpy(np.packbits(masks.reshape(-1)))))
    return out


def write_reference_config() -> None:
    """The model section of MMDetection's cascade-mask-rcnn_r50_fpn_1x_coco.py, its _base_
    chain resolved (tuples as lists), minus the data_preprocessor (det normalises and pads in
    the pipeline)."""
    import mmdet

    path = (Path(mmdet.__file__).parent / ".mim" / "configs" / "cascade_rcnn"
            / "cascade-mask-rcnn_r50_fpn_1x_coco.py")
    model = Config.fromfile(str(path)).to_dict()["model"]
    model.pop("data_preprocessor")
    CONFIG_OUT.write_text(json.dumps(model, indent=1) + "\n")
    print(f"wrote {CONFIG_OUT}")


def positives_per_stage(model, x: torch.Tensor) -> tuple[dict, list[list[int]]]:
    """The training losses, and each stage's sampled positives per image (read off its
    sampler)."""
    counts: list[list[int]] = []
    for sampler in model.roi_head.bbox_sampler:
        sample = sampler.sample

        def recording(*args, _sample=sample, **kwargs):
            result = _sample(*args, **kwargs)
            counts.append(len(result.pos_inds))
            return result

        sampler.sample = recording
    losses = model.loss(x, data_samples())
    for sampler in model.roi_head.bbox_sampler:
        del sampler.sample
    num_images = len(box.GT)
    per_stage = [counts[t:t + num_images] for t in range(0, len(counts), num_images)]
    assert max(max(c) for c in per_stage) <= MAX_POS, \
        f"{per_stage} positives: a sampler would draw at random"
    return losses, per_stage


def main() -> None:
    write_reference_config()
    register_all_modules()
    torch.manual_seed(box.SEED)
    model = MODELS.build(config().model)
    model.init_weights()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    weights = synthetic_state_dict(shapes, box.SEED, BIAS_OFFSETS, WEIGHT_SCALES, box.GAIN)
    model.load_state_dict(weights, strict=True)
    x = synthetic_images(2, *box.BATCH, box.IMG_SHAPES, box.SEED)

    model.train()
    losses, num_pos = positives_per_stage(model, x)
    flat = {}
    for key, value in losses.items():
        total = sum(value) if isinstance(value, (list, tuple)) else value  # RPN: per level
        flat[key] = float(total.detach())
    model.eval()
    fixture = dict(
        seed=box.SEED, gain=box.GAIN, shapes=shapes, bias_offsets=BIAS_OFFSETS,
        weight_scales=WEIGHT_SCALES,
        images_sum=float(x.double().sum()), images_abs_sum=float(x.double().abs().sum()),
        img_shapes=box.IMG_SHAPES, ori_shapes=box.ORI_SHAPES,
        scale_factors=[box.scale_factor(i) for i in range(2)],
        gt_boxes=[[b for b, _ in gts] for gts in box.GT],
        gt_labels=[[c for _, c in gts] for gts in box.GT],
        losses=flat, num_pos=num_pos,
        predictions={"rescale": predictions(model, x, True),
                     "no_rescale": predictions(model, x, False)},
        mmdet_version=__import__("mmdet").__version__,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, OUT)
    for key, value in flat.items():
        print(f"{key}: {value:.6f}")
    print(f"positives per stage and image: {num_pos}")
    for name, preds in fixture["predictions"].items():
        for i, p in enumerate(preds):
            probs = p["mask_probs"]
            print(f"{name} image {i}: {len(p['scores'])} detections, scores "
                  f"{[round(s, 3) for s in p['scores'].tolist()]}, labels "
                  f"{p['labels'].tolist()}, mask probs >= 0.5: "
                  f"{float((probs >= 0.5).float().mean()) if len(probs) else 0:.3f}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
