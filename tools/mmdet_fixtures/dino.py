"""Make tests/fixtures/mmdet/dino.pt: a tiny DINO's losses (matching, auxiliary, encoder and
denoising ones) and detections computed by MMDetection 3.3 on the CPU, for
tests/models/query_heads/test_dino_vs_mmdet.py; and dino_4scale_r50_shapes.json.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/dino.py

The model: ResNet-18 at base_channels 16 (C3-C5: 32, 64, 128 channels; norm_eval),
ChannelMapper to 32 channels with GroupNorm (8 groups) and one extra stride-2 level (4 levels),
a 2-layer deformable encoder and a 2-layer DINO decoder at embed_dims 32 (4 heads, 4 levels,
4 points, FFN 64, dropout 0), sine positions (num_feats 16, normalize, offset 0, temperature
20), 30 queries, DINOHead for 3 classes with DINO's focal / L1 / GIoU losses and Hungarian
costs, denoising with at most 12 queries (label noise 0.5, box noise 1.0: with 3 GT, 2 groups).
MMDetection's decoder sizes the reference boxes' sine embedding for embed_dims 256 (128 features
per coordinate); the fixture sets it to embed_dims / 2 = 16 (:func:`sine_embed_at_this_width`),
which is what 128 is at 256. Weights: the seeded synthetic state dict of tests/fixtures/mmdet/dino_weights.py (the fixture
stores names and shapes, not weights). Inputs: DETR's two images and GT
(tools/mmdet_fixtures/detr.py: one 256 x 320 batch, the second image padded).

The denoising noise is random in MMDetection: the draws of ``torch.rand_like`` and
``torch.randint_like`` inside ``CdnQueryGenerator.__call__`` are recorded (in call order: the
label draw p, the replacement classes of the chosen copies, the box signs as drawn {0, 1},
the box parts before the negatives' + 1), in MMDetection's flat layout (copy r of target t at
``r * T + t``, T the batch's concatenated GT), with the queries they made. det's test maps them
into its (N, 2P, G) layout and replays them.

Recorded besides: the losses in train mode, the gradients of their sum for GRAD_KEYS, the Hungarian matches per call (decoder layers,
then the encoder's top-k), the encoder's top-k indices, the decoder's hidden states and
references, and in eval mode, with and without rescaling, the top-k detections.
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

from mmdet.models.layers.transformer import dino_layers  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from tests.fixtures.mmdet.dino_weights import dino_state_dict  # noqa: E402
from tests.fixtures.mmdet.synthetic import synthetic_images  # noqa: E402
from tools.mmdet_fixtures.detr import (  # noqa: E402
    BATCH,
    GT,
    IMG_SHAPES,
    ORI_SHAPES,
    data_samples,
    predictions,
    scale_factor,
)

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "dino.pt"
R50_SHAPES = OUT.with_name("dino_4scale_r50_shapes.json")
R50_CONFIG = "dino/dino-4scale_r50_8xb2-12e_coco.py"
SEED = 23
NUM_CLASSES = 3
NUM_QUERIES = 30
NUM_DN_QUERIES = 12
EMBED = 32
# the classifiers' weights scaled up and biases offset (sigmoid scores spread over (0, 1))
WEIGHT_SCALES = {f"bbox_head.cls_branches.{i}.weight": 2.0 for i in range(3)}
BIAS_OFFSETS = {f"bbox_head.cls_branches.{i}.bias": [-3.0, -2.5, -2.0] for i in range(3)}

# parameters whose gradient of the summed losses is recorded: each path of the graph (the
# refinement branches, whose gradients depend on where the references are detached -- look
# forward twice --, the encoder's proposals, the denoising and content queries, the trunk)
GRAD_KEYS = ["bbox_head.reg_branches.0.4.weight", "bbox_head.reg_branches.1.4.weight",
             "bbox_head.reg_branches.2.4.weight", "bbox_head.cls_branches.2.weight",
             "decoder.ref_point_head.layers.0.weight",
             "decoder.layers.0.cross_attn.sampling_offsets.weight",
             "encoder.layers.1.self_attn.value_proj.weight", "memory_trans_fc.weight",
             "query_embedding.weight", "dn_query_generator.label_embedding.weight",
             "level_embed", "neck.convs.0.conv.weight", "backbone.conv1.weight"]

FFN = dict(embed_dims=EMBED, feedforward_channels=64, num_fcs=2, ffn_drop=0.0,
           act_cfg=dict(type="ReLU", inplace=True))
DEFORM = dict(embed_dims=EMBED, num_heads=4, num_levels=4, num_points=4, dropout=0.0,
              batch_first=True)


def config() -> Config:
    return Config(dict(model=dict(
        type="DINO", num_queries=NUM_QUERIES, with_box_refine=True, as_two_stage=True,
        num_feature_levels=4,
        data_preprocessor=dict(type="DetDataPreprocessor", mean=[0, 0, 0], std=[1, 1, 1],
                               bgr_to_rgb=False, pad_size_divisor=1),
        backbone=dict(type="ResNet", depth=18, base_channels=16, num_stages=4,
                      out_indices=(1, 2, 3), frozen_stages=-1,
                      norm_cfg=dict(type="BN", requires_grad=True), norm_eval=True,
                      style="pytorch", init_cfg=None),
        neck=dict(type="ChannelMapper", in_channels=[32, 64, 128], kernel_size=1,
                  out_channels=EMBED, act_cfg=None,
                  norm_cfg=dict(type="GN", num_groups=8), num_outs=4),
        encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=DEFORM, ffn_cfg=FFN)),
        decoder=dict(num_layers=2, return_intermediate=True, layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=EMBED, num_heads=4, dropout=0.0, batch_first=True),
            cross_attn_cfg=DEFORM, ffn_cfg=FFN), post_norm_cfg=None),
        positional_encoding=dict(num_feats=EMBED // 2, normalize=True, offset=0.0,
                                 temperature=20),
        bbox_head=dict(
            type="DINOHead", num_classes=NUM_CLASSES, embed_dims=EMBED, sync_cls_avg_factor=True,
            loss_cls=dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=1.0),
            loss_bbox=dict(type="L1Loss", loss_weight=5.0),
            loss_iou=dict(type="GIoULoss", loss_weight=2.0)),
        dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0,
                    group_cfg=dict(dynamic=True, num_groups=None,
                                   num_dn_queries=NUM_DN_QUERIES)),
        train_cfg=dict(assigner=dict(type="HungarianAssigner", match_costs=[
            dict(type="FocalLossCost", weight=2.0),
            dict(type="BBoxL1Cost", weight=5.0, box_format="xywh"),
            dict(type="IoUCost", iou_mode="giou", weight=2.0)])),
        test_cfg=dict(max_per_img=20))))


def write_r50_shapes() -> None:
    configs = Path(__import__("mmdet").__file__).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(configs / R50_CONFIG))
    cfg.model.backbone.init_cfg = None
    with torch.device("meta"):
        model = MODELS.build(cfg.model)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    R50_SHAPES.write_text(json.dumps(shapes, indent=0) + "\n")
    print(f"wrote {R50_SHAPES} ({len(shapes)} entries)")


class NoiseRecorder:
    """Records the draws of torch.rand_like / randint_like inside the generator's call and
    the queries it returns."""

    def __init__(self) -> None:
        self.draws: list[torch.Tensor] = []
        self.outputs: tuple | None = None

    def wrap(self, generator) -> None:
        honest_call = type(generator).__call__
        recorder = self

        def recording_call(gen, batch_data_samples):
            rand_like, randint_like = torch.rand_like, torch.randint_like

            def rec_rand_like(*a, **k):
                out = rand_like(*a, **k)
                recorder.draws.append(out.clone())
                return out

            def rec_randint_like(*a, **k):
                out = randint_like(*a, **k)
                recorder.draws.append(out.clone())
                return out

            torch.rand_like, torch.randint_like = rec_rand_like, rec_randint_like
            try:
                out = honest_call(gen, batch_data_samples)
            finally:
                torch.rand_like, torch.randint_like = rand_like, randint_like
            recorder.outputs = out
            return out

        type(generator).__call__ = recording_call


def sine_embed_at_this_width() -> None:
    """MMDetection's DINO decoder calls ``coordinate_to_encoding`` with its default
    ``num_feats = 128`` (right for embed_dims 256 only: the ``ref_point_head`` takes
    2 * embed_dims); at this fixture's 32 it is embed_dims / 2 = 16, as det's decoder has it."""
    honest = dino_layers.coordinate_to_encoding
    dino_layers.coordinate_to_encoding = lambda coord: honest(coord, num_feats=EMBED // 2)


def main() -> None:
    register_all_modules()
    sine_embed_at_this_width()
    write_r50_shapes()
    torch.manual_seed(SEED)
    model = MODELS.build(config().model)
    model.init_weights()
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    weights = dino_state_dict(shapes, SEED, BIAS_OFFSETS, WEIGHT_SCALES)
    model.load_state_dict(weights, strict=True)
    x = synthetic_images(2, *BATCH, IMG_SHAPES, SEED)

    noise = NoiseRecorder()
    noise.wrap(model.dn_query_generator)
    assert dino_layers.CdnQueryGenerator.__call__ is type(model.dn_query_generator).__call__

    matches = []  # per assigner call: decoder layer-major then image, then the encoder's
    honest = model.bbox_head.assigner.assign

    def recording_assign(*args, **kwargs):
        result = honest(*args, **kwargs)
        matches.append(result.gt_inds.clone())
        return result

    model.bbox_head.assigner.assign = recording_assign
    topk = []
    honest_topk = torch.topk

    decoder_out = {}

    def hook(_module, _args, output):
        decoder_out["hidden_states"] = output[0].detach().clone()
        decoder_out["references"] = output[1].detach().clone()

    handle = model.decoder.register_forward_hook(hook)
    model.train()

    def recording_topk(*args, **kwargs):
        out = honest_topk(*args, **kwargs)
        if kwargs.get("k") == NUM_QUERIES:
            topk.append(out[1].clone())
        return out

    torch.topk = recording_topk
    try:
        loss_dict = model.loss(x, data_samples())
    finally:
        torch.topk = honest_topk
    losses = {k: float(v.detach()) for k, v in loss_dict.items()}
    sum(loss_dict.values()).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()
             if name in GRAD_KEYS}
    handle.remove()
    model.bbox_head.assigner.assign = honest
    label_p, new_labels, box_sign, box_part = noise.draws
    dn_label_query, dn_bbox_query, dn_mask, dn_meta = noise.outputs
    model.eval()
    fixture = dict(
        seed=SEED, shapes=shapes, bias_offsets=BIAS_OFFSETS, weight_scales=WEIGHT_SCALES,
        images_sum=float(x.double().sum()),
        img_shapes=IMG_SHAPES, ori_shapes=ORI_SHAPES,
        scale_factors=[scale_factor(i) for i in range(2)],
        gt_boxes=[[b for b, _ in gts] for gts in GT],
        gt_labels=[[c for _, c in gts] for gts in GT],
        losses=losses,
        grads=grads,
        noise=dict(label_p=label_p, new_labels=new_labels, box_sign=box_sign,
                   box_part=box_part),
        dn=dict(label_query=dn_label_query.detach(), bbox_query=dn_bbox_query.detach(),
                attn_mask=dn_mask, meta=dict(dn_meta)),
        encoder_topk=topk[0],
        decoder=decoder_out,
        # MMDetection's gt_inds (0 background, g + 1 the GT g): decoder layers x images,
        # then the encoder's top-k per image
        assigned_gt_inds=torch.stack(matches).reshape(3, 2, NUM_QUERIES),
        predictions={"rescale": predictions(model, x, True),
                     "no_rescale": predictions(model, x, False)},
        mmdet_version=__import__("mmdet").__version__,
    )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, OUT)
    for key, value in losses.items():
        print(f"{key}: {value:.6f}")
    print("dn_meta", dict(dn_meta), "label draws", label_p.shape, "chosen", new_labels.shape)
    print("assigned gt_inds:", fixture["assigned_gt_inds"].tolist())
    for name, preds in fixture["predictions"].items():
        for i, p in enumerate(preds):
            print(f"{name} image {i}: scores {[round(s, 4) for s in p['scores'][:6].tolist()]}, "
                  f"labels {p['labels'][:6].tolist()}")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
