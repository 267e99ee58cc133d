"""Make tests/fixtures/mmdet/detr.pt: a tiny DETR's losses (with the auxiliary ones) and
detections computed by MMDetection 3.3 on the CPU, for tests/models/test_detr_vs_mmdet.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/detr.py

The model: ResNet-18 at base_channels 16 (C5 only, 128 channels; norm_eval: BN uses its running
statistics in both modes), ChannelMapper to 32 channels (1x1, no norm, no activation), a
2-layer encoder and a 2-layer decoder at embed_dims 32 (4 heads, FFN 64, dropout 0), sine
positions (num_feats 16, normalize), 12 queries, DETRHead for 3 classes with MMDetection's
DETR losses and Hungarian costs. Weights: the seeded synthetic state dict of
tests/fixtures/mmdet/synthetic.py with LayerNorm weights in U(0.5, 1.5) (see
tests/fixtures/mmdet/detr_weights.py), so the fixture stores names and shapes, not weights.
Inputs: two seeded images of one 256 x 320 batch (img_shape 256 x 320 and 224 x 288, so the
second image has padding and the attention masks matter; original sizes 128 x 160 and
150 x 192), three and two GT boxes.

Also written: tests/fixtures/mmdet/detr_r50_shapes.json, the state dict's names and shapes of
MMDetection's own detr_r50_8xb2-150e_coco model (the one its published checkpoint fits), which
det's detr_r50 preset must reproduce key for key.

Recorded: the losses in train mode (the last layer's and ``d0.*``), the matched query of each
GT per decoder layer (a hook on the assigner), and in eval mode, with and without rescaling,
the boxes, scores and labels of the top-k detections.
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
from mmengine.structures import InstanceData  # noqa: E402

from mmdet.registry import MODELS  # noqa: E402
from mmdet.structures import DetDataSample  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from tests.fixtures.mmdet.detr_weights import detr_state_dict  # noqa: E402
from tests.fixtures.mmdet.synthetic import synthetic_images  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "detr.pt"
R50_SHAPES = OUT.with_name("detr_r50_shapes.json")
R50_CONFIG = "detr/detr_r50_8xb2-150e_coco.py"
SEED = 22
NUM_CLASSES = 3
NUM_QUERIES = 12
EMBED = 32
BATCH = (256, 320)  # (H, W) of the padded batch
IMG_SHAPES = [(256, 320), (224, 288)]
ORI_SHAPES = [(128, 160), (150, 192)]
GT = [
    [([20.0, 30.0, 120.0, 110.0], 0), ([150.0, 40.0, 300.0, 200.0], 1),
     ([60.0, 150.0, 140.0, 250.0], 2)],
    [([10.0, 10.0, 200.0, 150.0], 2), ([180.0, 100.0, 280.0, 220.0], 0)],
]
GAIN = 1.0
# The head's weights scaled up (queries then differ in class and box) and their biases offset
# against the mean output each unit gets on these images: the detections spread over classes
# and boxes, the background logit sits 1 above, the boxes start about 0.3 of the image wide.
WEIGHT_SCALES = {"bbox_head.fc_cls.weight": 10.0, "bbox_head.fc_reg.weight": 10.0}
BIAS_OFFSETS = {"bbox_head.fc_cls.bias": [7.665, 11.736, 15.841, -7.796],
                "bbox_head.fc_reg.bias": [6.047, 1.074, -3.842, 9.704]}


def attn(**extra) -> dict:
    return dict(embed_dims=EMBED, num_heads=4, dropout=0.0, batch_first=True, **extra)


FFN = dict(embed_dims=EMBED, feedforward_channels=64, num_fcs=2, ffn_drop=0.0,
           act_cfg=dict(type="ReLU", inplace=True))


def config() -> Config:
    return Config(dict(model=dict(
        type="DETR", num_queries=NUM_QUERIES,
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[0, 0, 0], std=[1, 1, 1],
                               bgr_to_rgb=False, pad_size_divisor=1),
        backbone=dict(type="ResNet", depth=18, base_channels=16, num_stages=4,
                      out_indices=(3,), frozen_stages=-1,
                      norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True,
                      style="pytorch", init_cfg=None),
        neck=dict(type="ChannelMapper", in_channels=[128], kernel_size=1, out_channels=EMBED,
                  act_cfg=None, norm_cfg=None, num_outs=1),
        encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attn(), ffn_cfg=FFN)),
        decoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attn(), cross_attn_cfg=attn(),
                                                  ffn_cfg=FFN), return_intermediate=True),
        positional_encoding=dict(num_feats=EMBED // 2, normalize=True),
        bbox_head=dict(
            type="DETRHead", num_classes=NUM_CLASSES, embed_dims=EMBED,
            loss_cls=dict(type="CrossEntropyLoss", bg_cls_weight=0.1, use_sigmoid=False,
                          loss_weight=1.0, class_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=5.0),
            loss_iou=dict(type="GIoULoss", loss_weight=2.0)),
        train_cfg=dict(assigner=dict(type="HungarianAssigner", match_costs=[
            dict(type="ClassificationCost", weight=1.0),
            dict(type="BBoxL1Cost", weight=5.0, box_format="xywh"),
            dict(type="IoUCost", iou_mode="giou", weight=2.0)])),
        test_cfg=dict(max_per_img=8))))


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


def predictions(model, x: torch.Tensor, rescale: bool) -> list[dict]:
    with torch.no_grad():
        results = model.predict(x, data_samples(), rescale=rescale)
    return [dict(boxes=r.pred_instances.bboxes.clone(), scores=r.pred_instances.scores.clone(),
                 labels=r.pred_instances.labels.clone()) for r in results]


def write_r50_shapes() -> None:
    configs = Path(__import__("mmdet").__file__).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(configs / R50_CONFIG))
    cfg.model.backbone.init_cfg = None
    with torch.device("meta"):
        model = MODELS.build(cfg.model)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    R50_SHAPES.write_text(json.dumps(shapes, indent=0) + "\n")
    print(f"wrote {R50_SHAPES} ({len(shapes)} entries)")


def main() -> None:
    register_all_modules()
    write_r50_shapes()
    torch.manual_seed(SEED)
    model = MODELS.build(config().model)
    model.init_weights()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    weights = detr_state_dict(shapes, SEED, BIAS_OFFSETS, WEIGHT_SCALES, GAIN)
    model.load_state_dict(weights, strict=True)
    x = synthetic_images(2, *BATCH, IMG_SHAPES, SEED)

    matches = []  # per assigner call (layer-major, then image): GT index -> query
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
    fixture = dict(
        seed=SEED, gain=GAIN, shapes=shapes, bias_offsets=BIAS_OFFSETS,
        weight_scales=WEIGHT_SCALES,
        images_sum=float(x.double().sum()), images_abs_sum=float(x.double().abs().sum()),
        img_shapes=IMG_SHAPES, ori_shapes=ORI_SHAPES,
        scale_factors=[scale_factor(i) for i in range(2)],
        gt_boxes=[[b for b, _ in gts] for gts in GT],
        gt_labels=[[c for _, c in gts] for gts in GT],
        losses=losses,
        # (layers, images, queries): MMDetection's gt_inds (0 background, g + 1 the GT g)
        assigned_gt_inds=torch.stack(matches).reshape(2, 2, NUM_QUERIES),
        predictions={"rescale": predictions(model, x, True),
                     "no_rescale": predictions(model, x, False)},
        mmdet_version=__import__("mmdet").__version__,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, OUT)
    for key, value in losses.items():
        print(f"{key}: {value:.6f}")
    print("assigned gt_inds per layer/image:", fixture["assigned_gt_inds"].tolist())
    for name, preds in fixture["predictions"].items():
        for i, p in enumerate(preds):
            print(f"{name} image {i}: scores {[round(s, 4) for s in p['scores'].tolist()]}, "
                  f"labels {p['labels'].tolist()}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
