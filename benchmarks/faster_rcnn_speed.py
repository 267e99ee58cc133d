"""Speed of det's Faster R-CNN R50-FPN against torchvision's ``fasterrcnn_resnet50_fpn``.

    python benchmarks/faster_rcnn_speed.py [--device cpu] [--batch 2] [--size 320] [--iters 5]
        [--warmup 2] [--amp bf16] [--channels-last] [--bare] [--tv-frozen] [--same-weights]
        [--hot-classes 4] [--hot-prob 0.1] [--only train|infer]

The inputs, timing and report are ``benchmarks/retinanet_speed.py``'s (imported from it): N
images of S x S pixels with G = 5 random GT boxes each, the same for both models (torchvision's
labels are shifted by one: its class 0 is the background). After ``--warmup`` untimed runs of
each, ``--iters`` runs in alternation, median and fastest run per phase:

* train: forward + RPN and RoI losses (proposals, RoI sampling included) + backward + SGD step
  (learning rate 0, see below);
* infer: ``predict`` including both NMS (the RPN's per level, the RoI head's per class);
* bare (``--bare``): backbone + FPN + RPN head forward only (eval mode, no grad), no proposals
  and no RoI head, for both models.

Ours is ``presets/faster_rcnn_r50.toml``'s model (80 classes, random init,
``model.backbone.init_cfg = false``). torchvision's is ``fasterrcnn_resnet50_fpn(weights=None,
weights_backbone=None, num_classes=81)`` (torchvision counts the background) with ``min_size =
max_size = size``, ``box_detections_per_img = 100``, and MMDetection's settings where
torchvision has the option:

* ``rpn_post_nms_top_n_train = 1000`` (torchvision's default 2000): proposals per image while
  training, MMDetection's ``train_cfg.rpn_proposal.max_per_img``. The other RPN numbers already
  agree: ``pre_nms_top_n`` is per level in both (2000 train, 1000 test, MMDetection's
  ``nms_pre``), ``post_nms_top_n`` per image (1000 at test, ``test_cfg.rpn.max_per_img``), NMS
  0.7 within each level, 256 anchors sampled per image, half positive at most, IoU 0.7 / 0.3.
* ``box_roi_pool``: MultiScaleRoIAlign on P2-P5 with ``sampling_ratio = 0`` (adaptive, MMCV's
  default; torchvision's builder uses 2, which pools up to 4x fewer samples per bin).
* Already equal: 512 RoIs sampled per image, positive fraction 0.25, IoU 0.5, GT boxes added as
  proposals; deltas scaled by (10, 10, 5, 5) = 1 / MMDetection's stds (0.1, 0.1, 0.2, 0.2);
  ``box_score_thresh`` 0.05, ``box_nms_thresh`` 0.5, 100 detections per image; the same
  anchors (32..512 px, ratios 0.5, 1, 2) and the same RoI level rule (224 px on level 4 ==
  MMDetection's ``finest_scale`` 56 on P2).

What still differs, by design of each library: torchvision's RoIAlign is ``aligned = False``
(MMCV's default is True; the same work), its anchors are rounded to whole pixels, its losses
are smooth-L1 (beta 1/9) where MMDetection's preset uses L1, it normalises and resizes the
images inside the model (``GeneralizedRCNNTransform``: a scale-1 resize here, timed with it),
it drops proposals smaller than 1e-3 px and detections smaller than 1e-2 px where det drops
empty ones, and its RPN and RoI post-processing loop over images in Python where det batches
them.

The loads are matched, and printed before the timings. With random init the RPN's deltas and
the box head's outputs are arbitrary and of very different scale in the two models
(torchvision's randomly initialised ResNet, whose BatchNorm statistics are the identity in
eval mode, gives FPN features 100-400 times larger than ours), and neither RPN has a score
threshold, so a bias alone cannot match them. Both models therefore get the same last layers:
RPN objectness N(0, 0.01) with bias 0 (it only ranks the anchors), RPN deltas 0 (proposals are
the clipped anchors), box regressor 0, and box classifier weights 0 with the same biases:
``--hot-classes`` classes spread over the 80 at the logit that gives them softmax probability
``--hot-prob`` (default 0.1 > ``score_thr`` 0.05), the background and the other classes 0
(probability below 0.01). Every proposal then passes ``score_thr`` for exactly those classes,
so each image's per-class NMS gets 1000 proposals x 4 classes = 4000 candidates in both, and
both keep the full 1000 proposals per image (per-level NMS leaves more than 1000). The script
prints, per image, the proposals, the candidates above ``score_thr`` and the detections of
both, and how many RoIs each FPN level pools (RoIAlign's cost depends on it; the objectness
ranking picks different anchor sizes in the two models). Ours gets the images normalised as
torchvision's model normalises them inside (ours normalises in the data pipeline).

The loads must also stay put while training is timed: the SGD step (the harness's, momentum
0.9, weight decay 1e-4) runs at learning rate 0 -- the same work, weights unchanged. With the
harness's 1e-4, the zero RPN deltas of the random-init models move within a step, the sampled
RoIs' sizes drift differently in the two models (measured over 7 steps with the same weights:
mean RoI side 7 to 85 px in det, 28 to 58 px in torchvision), and so does RoIAlign's backward,
the largest single cost of the step on CPU (about 0.7 s of 2 s, one thread whatever the
thread count). The infer and bare phases start again from the weights and BatchNorm statistics
set above, not from those after training.

``--same-weights`` copies torchvision's weights into ours (backbone, FPN, RPN, box head; the
predictor's 81 classes with the background first become ours with the background last, and its
81 x 4 deltas lose the background's 4), once before the steps above, to check, and once after
them, to time identical networks. The check (eval mode, no grad, the same un-normalised random
images fed to both networks, which keeps the objectness logits within about +-5: a sigmoid
saturated to 1.0 gives ties that each library breaks its own way) prints how far apart the FPN
features and the RPN's objectness and deltas are, how many of our test proposals torchvision
also proposes (IoU >= 0.9) with its rounded anchors and with MMDetection's unrounded ones, and,
from the same proposals with our RoIAlign switched to ``aligned = False``, how many of our
detections torchvision also detects, with the same label and score. Measured on torch 2.14.1,
torchvision 0.29.1: features and RPN outputs bitwise equal; proposals 63-64% shared with
rounded anchors and 100% with unrounded ones; detections 199 of 200 -- the other one is 0.008
px wide, which torchvision drops (``remove_small_boxes(1e-2)``) and MMDetection 2.x keeps.

As for RetinaNet, the preset freezes the stem and ``layer1`` with frozen BatchNorm, while
torchvision's randomly initialised model trains every layer with live BatchNorm;
``--tv-frozen`` builds torchvision's the way it does for fine-tuning (FrozenBatchNorm2d, 3
trainable stages), which matches the preset's frozen parts.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign, box_iou

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

import detcli  # noqa: E402
from detcli.models.roi_heads.roi_extractor import map_roi_levels  # noqa: E402
from detcli.models.torchvision_weights import faster_rcnn_from_torchvision  # noqa: E402
from detcli.models.roi_heads.standard_roi_head import batch_rois  # noqa: E402
from detcli.structures.batch import ImageBatch  # noqa: E402
from detcli.structures.proposals import Proposals  # noqa: E402
from retinanet_speed import (  # noqa: E402  (the shared harness)
    NUM_CLASSES,
    harness_parser,
    make_inputs,
    no_grad_call,
    report,
    time_alternating,
    torchvision_size,
    train_step,
)

PRESET = "faster_rcnn_r50"  # a packaged preset, by name
SAME_BOX_IOU = 0.9  # a proposal of ours counts as torchvision's too above this IoU


def parse_args() -> argparse.Namespace:
    """The harness's options (``retinanet_speed.parse_args``, without ``--cls-bias``) and ours."""
    parser = harness_parser(__doc__.split("\n\n")[0],
                            bare_help="also time backbone + FPN + RPN head alone")
    parser.add_argument("--same-weights", action="store_true",
                        help="copy torchvision's weights into ours, check both agree")
    parser.add_argument("--hot-classes", type=int, default=4,
                        help="classes every proposal scores above score_thr (0: none)")
    parser.add_argument("--hot-prob", type=float, default=0.1,
                        help="softmax probability of each hot class")
    args = parser.parse_args()
    if not 0 <= args.hot_classes <= NUM_CLASSES:
        parser.error(f"--hot-classes must be in [0, {NUM_CLASSES}], got {args.hot_classes}")
    if args.hot_classes and not 0 < args.hot_prob * args.hot_classes < 1:
        parser.error(f"--hot-prob x --hot-classes must be in (0, 1), got {args.hot_prob} x "
                     f"{args.hot_classes}")
    return args


# ---- the two models --------------------------------------------------------------------------


def build_ours() -> nn.Module:
    cfg = detcli.load_config(PRESET, overrides=["model.backbone.init_cfg=false"]).cfg
    return detcli.build_detector(cfg.model)


def build_torchvision(args: argparse.Namespace) -> nn.Module:
    settings = dict(
        **torchvision_size(args), box_detections_per_img=100,
        rpn_post_nms_top_n_train=1000,  # MMDetection's train_cfg.rpn_proposal.max_per_img
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7, sampling_ratio=0),
    )
    if args.tv_frozen:
        resnet = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(resnet, 3)  # P2-P5 and P6 by max-pool, as the default
        return FasterRCNN(backbone, NUM_CLASSES + 1, **settings)
    return fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                   num_classes=NUM_CLASSES + 1, **settings)


def hot_logits(args: argparse.Namespace) -> torch.Tensor:
    """The box classifiers' biases over (K foreground classes, background), det's order (K + 1,):
    ``--hot-classes`` classes spread over the K at the logit giving probability ``--hot-prob``
    when every other logit is 0 (the classifier weights are 0), the rest 0."""
    bias = torch.zeros(NUM_CLASSES + 1)
    hot = args.hot_classes
    if hot:
        # p = e^b / (e^b * hot + (K + 1 - hot))  =>  e^b = p (K + 1 - hot) / (1 - p * hot)
        p = args.hot_prob
        value = math.log(p * (NUM_CLASSES + 1 - hot) / (1 - p * hot))
        bias[torch.arange(hot) * (NUM_CLASSES // hot)] = value
    return bias


def align_last_layers(ours: nn.Module, theirs: nn.Module, args: argparse.Namespace) -> None:
    """The same last layers in both models (module docstring): RPN objectness N(0, 0.01) with
    bias 0, RPN deltas 0, box classifier weights 0 with the hot-class biases, box deltas 0."""
    bias = hot_logits(args)  # (K + 1,) background last
    tv_bias = torch.cat([bias[-1:], bias[:-1]])  # (K + 1,) background first
    with torch.no_grad():
        for layer in (ours.rpn_head.rpn_cls, theirs.rpn.head.cls_logits):
            layer.weight.normal_(0.0, 0.01)
            layer.bias.zero_()
        for layer, layer_bias in (
            (ours.rpn_head.rpn_reg, None), (theirs.rpn.head.bbox_pred, None),
            (ours.roi_head.bbox_head.fc_cls, bias),
            (theirs.roi_heads.box_predictor.cls_score, tv_bias),
            (ours.roi_head.bbox_head.fc_reg, None),
            (theirs.roi_heads.box_predictor.bbox_pred, None),
        ):
            layer.weight.zero_()
            if layer_bias is None:
                layer.bias.zero_()
            else:
                layer.bias.copy_(layer_bias)


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


def unrounded_cell_anchors(generator: nn.Module) -> list[torch.Tensor]:
    """torchvision's base anchors without its ``round()``: MMDetection's (center offset 0)."""
    cells = []
    for sizes, ratios in zip(generator.sizes, generator.aspect_ratios):
        scales = torch.as_tensor(sizes, dtype=torch.float32)  # (S,)
        h_ratios = torch.as_tensor(ratios, dtype=torch.float32).sqrt()  # (R,)
        ws = (scales[None, :] / h_ratios[:, None]).reshape(-1)  # (R*S,)
        hs = (scales[None, :] * h_ratios[:, None]).reshape(-1)  # (R*S,)
        cells.append(torch.stack([-ws, -hs, ws, hs], dim=1) / 2)  # (R*S, 4)
    return cells


def matched(ours_boxes: torch.Tensor, tv_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of ours (P, 4) have a torchvision box (Q, 4) at IoU >= SAME_BOX_IOU (P,) bool, and
    the index of each one's best match (P,)."""
    if len(ours_boxes) == 0 or len(tv_boxes) == 0:
        return (torch.zeros(len(ours_boxes), dtype=torch.bool),
                torch.zeros(len(ours_boxes), dtype=torch.long))
    best, index = box_iou(ours_boxes, tv_boxes).max(dim=1)  # (P,) each
    return best >= SAME_BOX_IOU, index


@torch.no_grad()
def check_same_weights(ours: nn.Module, theirs: nn.Module, images) -> None:
    """With torchvision's weights in ours (eval mode, the same input tensor, torchvision's
    transform bypassed), print how far apart the FPN features, the RPN's objectness and deltas,
    the test proposals and the detections are."""
    ours.eval(), theirs.eval()
    x = images.tensor  # (N, 3, S, S)
    feats, rpn_outputs = ours(x)
    tv_feats = list(theirs.backbone(x).values())
    tv_logits, tv_deltas = theirs.rpn.head(tv_feats)
    feat_diff = max(max_rel_diff(a, b) for a, b in zip(feats, tv_feats))
    logit_diff = max(float((a - b).abs().max()) for a, b in zip(rpn_outputs.cls_logits, tv_logits))
    logit_range = max(float(b.abs().max()) for b in tv_logits)
    delta_diff = max(max_rel_diff(a, b) for a, b in zip(rpn_outputs.bbox_deltas, tv_deltas))
    print(f"  same weights: FPN features max rel diff {feat_diff:.1e}; RPN objectness logits "
          f"max abs diff {logit_diff:.1e} (|logit| up to {logit_range:.2f}); RPN deltas max rel "
          f"diff {delta_diff:.1e}")

    proposals = ours.rpn_head.predict_proposals(rpn_outputs, images, ours.test_cfg.rpn)
    image_list, _ = theirs.transform([img for img in x])  # image sizes only
    tv_named = dict(zip(["0", "1", "2", "3", "pool"], tv_feats))
    generator = theirs.rpn.anchor_generator
    rounded = generator.cell_anchors
    for anchors in ("rounded (as torchvision)", "unrounded (as MMDetection)"):
        if anchors.startswith("unrounded"):
            generator.cell_anchors = unrounded_cell_anchors(generator)
        tv_props, _ = theirs.rpn(image_list, tv_named)
        shared = [f"{int(matched(b[v], t)[0].sum())}/{int(v.sum())} of {len(t)}"
                  for b, v, t in zip(proposals.boxes, proposals.valid, tv_props)]
        print(f"  same weights, torchvision anchors {anchors}: our test proposals that "
              f"torchvision also proposes (IoU >= {SAME_BOX_IOU}): {', '.join(shared)}")
    generator.cell_anchors = rounded

    # detections from torchvision's (unrounded-anchor) proposals, our RoIAlign as torchvision's
    extractor = ours.roi_head.bbox_roi_extractor
    aligned, extractor.aligned = extractor.aligned, False
    tv_boxes = torch.zeros(len(images), ours.test_cfg.rpn.max_per_img, 4)
    tv_valid = torch.zeros(len(images), ours.test_cfg.rpn.max_per_img, dtype=torch.bool)
    for i, boxes in enumerate(tv_props):
        tv_boxes[i, :len(boxes)], tv_valid[i, :len(boxes)] = boxes, True
    dets = ours.roi_head.predict(feats, Proposals(tv_boxes, torch.zeros_like(tv_valid,
                                 dtype=torch.float32), tv_valid), images)
    extractor.aligned = aligned
    tv_dets, _ = theirs.roi_heads(tv_named, tv_props, image_list.image_sizes)
    rows = []
    for i, theirs_dets in enumerate(tv_dets):
        num = int(dets.num_dets[i])
        boxes, scores, labels = dets.boxes[i, :num], dets.scores[i, :num], dets.labels[i, :num]
        both, index = matched(boxes, theirs_dets["boxes"])  # (D,) each
        index = index[both]
        same_label = bool((labels[both] + 1 == theirs_dets["labels"][index]).all())
        score_diff = float((scores[both] - theirs_dets["scores"][index]).abs().max()) \
            if both.any() else 0.0
        rows.append(f"{int(both.sum())}/{num} of {len(theirs_dets['boxes'])} (labels equal "
                    f"{same_label}, max score diff {score_diff:.1e})")
    print(f"  same weights, same proposals, RoIAlign aligned = False: our detections that "
          f"torchvision also detects (IoU >= {SAME_BOX_IOU}): {'; '.join(rows)}")


# ---- loads -----------------------------------------------------------------------------------


def level_mix(boxes: torch.Tensor, extractor: nn.Module) -> list[int]:
    """How many of the RoIs (R, 4) each FPN level pools (our extractor's rule, which is
    torchvision's ``LevelMapper``): RoIAlign's cost depends on it."""
    levels = map_roi_levels(boxes, extractor.num_inputs, extractor.finest_scale)  # (R,)
    return torch.bincount(levels, minlength=extractor.num_inputs).tolist()


@torch.no_grad()
def loads(ours: nn.Module, theirs: nn.Module, images, tv_images) -> None:
    """Print, per image, the test proposals, the (proposal, class) pairs above ``score_thr``
    (what each per-class NMS receives) and the detections kept, and the RoIs per FPN level in
    the batch, for both models."""
    ours.eval(), theirs.eval()
    score_thr = ours.roi_head.test_cfg.score_thr
    extractor = ours.roi_head.bbox_roi_extractor
    feats, rpn_outputs = ours(images.tensor)
    proposals = ours.rpn_head.predict_proposals(rpn_outputs, images, ours.test_cfg.rpn)
    cls_score, _ = ours.roi_head.bbox_forward(feats, batch_rois(proposals.boxes))  # (N*P, K + 1)
    scores = F.softmax(cls_score, dim=-1)[:, :NUM_CLASSES].view(len(images), -1, NUM_CLASSES)
    above = ((scores > score_thr) & proposals.valid[..., None]).sum(dim=(1, 2))  # (N,)
    dets = ours.roi_head.predict(feats, proposals, images)
    ours_row = (proposals.valid.sum(dim=1).tolist(), above.tolist(), dets.num_dets.tolist(),
                level_mix(proposals.boxes[proposals.valid], extractor))

    image_list, _ = theirs.transform(tv_images)
    tv_feats = theirs.backbone(image_list.tensors)
    tv_props, _ = theirs.rpn(image_list, tv_feats)
    heads = theirs.roi_heads
    box_feats = heads.box_head(heads.box_roi_pool(tv_feats, tv_props, image_list.image_sizes))
    tv_logits, _ = heads.box_predictor(box_feats)  # (sum P_i, K + 1) background first
    tv_scores = F.softmax(tv_logits, dim=-1)[:, 1:].split([len(p) for p in tv_props])
    tv_dets, _ = heads(tv_feats, tv_props, image_list.image_sizes)
    theirs_row = ([len(p) for p in tv_props], [int((s > score_thr).sum()) for s in tv_scores],
                  [len(d["boxes"]) for d in tv_dets], level_mix(torch.cat(tv_props), extractor))
    for name, (props, cands, kept, mix) in (("det", ours_row), ("torchvision", theirs_row)):
        print(f"  load  {name:11s} per image: proposals {props}, (proposal, class) above "
              f"score_thr {score_thr}: {cands}, detections {kept}; RoIs per level P2-P5 {mix}")


# ---- timing ----------------------------------------------------------------------------------


def still_sgd(model: nn.Module) -> torch.optim.Optimizer:
    """The harness's SGD (momentum 0.9, weight decay 1e-4) at learning rate 0: every step does
    the same work, but the weights, and so the load, stay as set (module docstring)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=1e-4)


def normalized_like(theirs: nn.Module, images: ImageBatch, args: argparse.Namespace) -> ImageBatch:
    """Our input: the images normalised as torchvision's model normalises them inside (ours
    normalises in the data pipeline), so that with ``--same-weights`` both networks see the
    same tensor; the memory format is kept."""
    x = images.tensor  # (N, 3, S, S)
    mean = torch.as_tensor(theirs.transform.image_mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(theirs.transform.image_std, dtype=x.dtype, device=x.device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    x = (x - mean[:, None, None]) / std[:, None, None]  # (N, 3, S, S)
    return ImageBatch.from_tensor(x.contiguous(memory_format=memory_format))


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    print(f"Faster R-CNN: device {device}, batch {args.batch}, size "
          f"{args.size[0]}x{args.size[1]}, iters "
          f"{args.iters} (+{args.warmup} warm-up), amp {args.amp}, channels_last "
          f"{args.channels_last}, threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, tv-frozen {args.tv_frozen}, same-weights "
          f"{args.same_weights}, hot classes {args.hot_classes} at p {args.hot_prob}")
    print("  (train: forward + losses + backward + SGD step at lr 0; infer: predict with both "
          "NMS; bare: backbone + FPN + RPN head only; speed ratio > 1: det is faster; the load "
          "lines show both models do the same post-processing work)")
    ours, theirs = build_ours(), build_torchvision(args)
    if args.same_weights:  # first on torchvision's own init: its RPN deltas are not zero
        # the raw random images, not normalised: objectness logits within about +-5, so no
        # sigmoid saturates to 1.0 (ties, which each library breaks its own way)
        (images, _), _ = make_inputs(args, torch.device("cpu"))
        ours.load_state_dict(faster_rcnn_from_torchvision(theirs.state_dict(), ours.state_dict()))
        check_same_weights(ours, theirs, images)
    align_last_layers(ours, theirs, args)
    if args.same_weights:
        ours.load_state_dict(faster_rcnn_from_torchvision(theirs.state_dict(), ours.state_dict()))

    ours, theirs = ours.to(device), theirs.to(device)
    if args.channels_last:
        ours = ours.to(memory_format=torch.channels_last)
        theirs = theirs.to(memory_format=torch.channels_last)
    # the infer phase starts from these weights and BatchNorm statistics, not the trained ones
    initial = [copy.deepcopy(model.state_dict()) for model in (ours, theirs)]
    (images, targets), (tv_images, tv_targets) = make_inputs(args, device)
    images = normalized_like(theirs, images, args)
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1}  # class 0 is background
                  for t in tv_targets]
    loads(ours, theirs, images, tv_images)

    if args.only in (None, "train"):
        ours.train(), theirs.train()
        runs = {
            "det": train_step(ours, still_sgd(ours), lambda: ours.loss(images, targets),
                              args, device),
            "torchvision": train_step(theirs, still_sgd(theirs),
                                      lambda: theirs(tv_images, tv_targets), args, device),
        }
        report("train", time_alternating(runs, args, device), args.batch)
        for model, state in zip((ours, theirs), initial):
            model.load_state_dict(state)

    ours.eval(), theirs.eval()
    if args.only in (None, "infer"):
        runs = {
            "det": no_grad_call(lambda: ours.predict_batch(images), args, device),
            "torchvision": no_grad_call(lambda: theirs(tv_images), args, device),
        }
        report("infer", time_alternating(runs, args, device), args.batch)

    if args.bare:
        def tv_net() -> object:  # backbone + FPN + RPN head, as ours(images.tensor)
            return theirs.rpn.head(list(theirs.backbone(images.tensor).values()))
        runs = {"det": no_grad_call(lambda: ours(images.tensor), args, device),
                "torchvision": no_grad_call(tv_net, args, device)}
        report("bare", time_alternating(runs, args, device), args.batch)


if __name__ == "__main__":
    main()
