"""The families ``gpu_suite.py`` measures, as data: det's preset, torchvision's nearest peer,
and what the bare-network floor of each runs.

N images, K classes, P RoIs per image, Q mask RoIs per image, M detections per image.

Each :class:`Family` names det's preset for the GPU run (R50 or its size class, random init)
and for ``--smoke`` (the family's ``*_tiny_synth`` preset), torchvision's peer (``peer``, a
builder in ``suite_peers.py``; None: torchvision has none, det's own numbers only) and its
``floor``: the network without what is outside it. What the floors run:

* dense (RetinaNet, FCOS, ATSS, RTMDet): det's ``forward`` -- backbone, neck, the dense
  head's convolutions; torchvision's backbone + FPN + head. Outside: priors, assignment,
  targets, losses; decoding and NMS.
* two-stage (Faster R-CNN, Mask R-CNN, Cascade R-CNN): backbone, FPN, RPN head, then the RoI
  head's RoIAlign and box head(s) on P fixed RoIs per image (the sampler's ``num`` in a train
  step, the test proposals ``max_per_img`` in inference: the RoIs a real step classifies), and
  for Mask R-CNN the mask RoIAlign and mask head on Q fixed RoIs (P x ``pos_fraction``, the
  sampler's positive budget, which det's mask branch always runs and torchvision's only
  for its positives, in training; M = 100 in inference). For Cascade R-CNN the RoIs
  go through every stage (``box_outputs``: each stage's refinement included). torchvision's
  floor runs its RPN head, ``box_roi_pool``, ``box_head``, ``box_predictor`` (and the mask
  pool, head and predictor) on the same fixed RoIs. Outside: anchor targets and RPN losses,
  proposals (decoding, per-level NMS), RoI sampling, box and mask targets, losses;
  post-processing (per-class NMS; Mask R-CNN's mask pasting, which ``predict`` runs).
* query (DETR, Deformable DETR, DINO): det's ``forward`` -- backbone, neck (ChannelMapper),
  positional encodings, the transformer encoder and decoder, the head's class and box
  branches on every decoder layer; for Deformable DETR and DINO also the encoder's proposal
  scoring and top-Q query selection (part of their network). Not in it: DINO's denoising
  queries (its train step adds them to the decoder), Hungarian matching, the set losses and
  the top-k post-processing.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

import detcli
import retinanet_speed
import suite_peers
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.detections import DetectionBatch

NUM_GTS = retinanet_speed.NUM_GTS  # random GT boxes per image
MASK_INFER_DETS = 100  # M: detections the mask floor segments per image at inference


@dataclass(frozen=True)
class Family:
    name: str
    preset: str  # the GPU run's det preset
    smoke_preset: str  # --smoke's
    kind: str  # "dense", "two_stage", "query": which floor (module docstring)
    peer: str | None = None  # suite_peers.PEERS key; None: no torchvision peer
    peer_label: str = ""  # the peer as the table names it
    masks: bool = False  # trains with instance masks
    setup: Callable[[nn.Module, argparse.Namespace], None] | None = None  # the loads

    @property
    def floor(self) -> str:
        return FLOORS[self.kind]


FLOORS = {
    "dense": "backbone + neck + dense head convolutions",
    "two_stage": "backbone + FPN + RPN head + RoIAlign and box head(s) on P fixed RoIs "
                 "(+ mask head on Q)",
    "query": "backbone + neck + transformer encoder/decoder + head branches (no denoising, "
             "matching, losses, top-k)",
}


def _retina_bias(model: nn.Module, args: argparse.Namespace) -> None:
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(args.cls_bias)


def _fcos_bias(model: nn.Module, args: argparse.Namespace) -> None:
    with torch.no_grad():
        model.bbox_head.conv_cls.bias.fill_(args.cls_bias)
        model.bbox_head.conv_centerness.bias.fill_(suite_peers.CENTERNESS_BIAS)


def _atss_bias(model: nn.Module, args: argparse.Namespace) -> None:
    with torch.no_grad():
        model.bbox_head.atss_cls.bias.fill_(args.cls_bias)
        model.bbox_head.atss_centerness.bias.fill_(suite_peers.CENTERNESS_BIAS)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("retinanet", "retinanet_r50", "retinanet_tiny_synth", "dense", "retinanet",
           "retinanet_resnet50_fpn", setup=_retina_bias),
    Family("fcos", "fcos_r50", "fcos_tiny_synth", "dense", "fcos", "fcos_resnet50_fpn",
           setup=_fcos_bias),
    Family("atss", "atss_r50", "atss_tiny_synth", "dense", "retinanet",
           "retinanet_resnet50_fpn (no ATSS in torchvision)", setup=_atss_bias),
    Family("faster_rcnn", "faster_rcnn_r50", "faster_rcnn_tiny_synth", "two_stage",
           "faster_rcnn", "fasterrcnn_resnet50_fpn"),
    Family("mask_rcnn", "mask_rcnn_r50", "mask_rcnn_tiny_synth", "two_stage", "mask_rcnn",
           "maskrcnn_resnet50_fpn", masks=True),
    Family("cascade_rcnn", "cascade_rcnn_r50", "cascade_rcnn_tiny_synth", "two_stage",
           "faster_rcnn", "fasterrcnn_resnet50_fpn (nearest: no cascade in torchvision)"),
    # RTMDet's random-init prior 0.01 is above its score_thr 0.001: every point is a candidate
    Family("rtmdet", "rtmdet_l", "rtmdet_tiny_synth", "dense"),
    Family("detr", "detr_r50", "detr_tiny_synth", "query"),
    Family("deformable_detr", "deformable_detr_r50", "deformable_detr_tiny_synth", "query"),
    Family("dino", "dino_4scale_r50", "dino_tiny_synth", "query"),
)}


def build_det(family: Family, args: argparse.Namespace) -> nn.Module:
    preset = family.smoke_preset if args.smoke else family.preset
    cfg = detcli.load_config(preset, overrides=["model.backbone.init_cfg=false"]).cfg
    return detcli.build_detector(cfg.model)


def build_pair(family: Family, args: argparse.Namespace) -> tuple[nn.Module, nn.Module | None]:
    """det's model and torchvision's peer (None without one), with the family's loads."""
    ours = build_det(family, args)
    theirs = None if family.peer is None else suite_peers.PEERS[family.peer](
        args, ours.num_classes)
    if family.setup is not None:
        family.setup(ours, args)
    if family.kind == "two_stage":
        suite_peers.align_two_stage(ours, theirs, args)
    return ours, theirs


# ---- inputs ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    images: ImageBatch  # det's (N, 3, H, W)
    targets: DetTargets
    tv_images: list[Tensor]  # N x (3, H, W)
    tv_targets: list[dict[str, Tensor]]


def make_inputs(family: Family, num_classes: int, args: argparse.Namespace,
                device: torch.device) -> Inputs:
    """N random images of H x W, G = 5 random GT boxes each inside it (with box-filled masks
    for a mask family), the same for both models; torchvision's two-stage labels shifted by
    one (its class 0 is the background)."""
    n, (h, w) = args.batch, args.size
    images, boxes, labels = retinanet_speed.random_images_and_gt(n, h, w, num_classes)
    masks = None
    if family.masks:
        ys, xs = torch.arange(h)[:, None] + 0.5, torch.arange(w)[None, :] + 0.5
        b = boxes[..., None, None]  # (N, G, 4, 1, 1)
        masks = ((xs >= b[:, :, 0]) & (xs <= b[:, :, 2]) & (ys >= b[:, :, 1])
                 & (ys <= b[:, :, 3])).to(torch.uint8)  # (N, G, H, W)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    images = images.to(device).contiguous(memory_format=memory)
    targets = DetTargets.from_lists(list(boxes.to(device)), list(labels.to(device)),
                                    masks=None if masks is None else list(masks.to(device)))
    shift = 1 if family.kind == "two_stage" else 0
    tv_targets = []
    for i in range(n):
        target = {"boxes": boxes[i].to(device), "labels": labels[i].to(device) + shift}
        if masks is not None:
            target["masks"] = masks[i].to(device)
        tv_targets.append(target)
    return Inputs(ImageBatch.from_tensor(images), targets, list(images), tv_targets)


def normalized_like(theirs: nn.Module, images: ImageBatch,
                    args: argparse.Namespace) -> ImageBatch:
    """det's input normalised as torchvision's two-stage model normalises inside (the loads
    of ``faster_rcnn_speed.py``); the memory format kept."""
    x = images.tensor
    mean = torch.as_tensor(theirs.transform.image_mean, dtype=x.dtype, device=x.device)
    std = torch.as_tensor(theirs.transform.image_std, dtype=x.dtype, device=x.device)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    x = (x - mean[:, None, None]) / std[:, None, None]  # (N, 3, H, W)
    return ImageBatch.from_tensor(x.contiguous(memory_format=memory))


# ---- the floors -----------------------------------------------------------------------------


def fixed_rois(num_images: int, num_rois: int, size: tuple[int, int],
               device: torch.device) -> Tensor:
    """(N, P, 4) seeded boxes inside an H x W image, sides from 8 px to half the image (every
    FPN level pools some)."""
    generator = torch.Generator().manual_seed(1)
    h, w = size
    extent = torch.tensor([w, h], dtype=torch.float32)
    wh = 8 + torch.rand(num_images, num_rois, 2, generator=generator) * (extent / 2 - 8)
    xy = torch.rand(num_images, num_rois, 2, generator=generator) * (extent - wh)
    return torch.cat([xy, xy + wh], dim=-1).to(device)  # (N, P, 4)


@dataclass
class RoIPlan:
    """The fixed RoIs of a two-stage floor, for training and for inference."""

    train: Tensor  # (N, P_train, 4)
    infer: Tensor  # (N, P_infer, 4)
    mask_train: Tensor  # (N, Q_train, 4)
    mask_infer: Tensor  # (N, M, 4)


def roi_plan(model: nn.Module, args: argparse.Namespace, device: torch.device) -> RoIPlan:
    rcnn = model.train_cfg.rcnn
    sampler = (rcnn[0] if isinstance(rcnn, list) else rcnn).sampler  # Cascade: one per stage
    train = fixed_rois(args.batch, sampler.num, args.size, device)
    infer = fixed_rois(args.batch, model.test_cfg.rpn.max_per_img, args.size, device)
    positives = max(1, int(sampler.num * sampler.pos_fraction))  # det's mask slots
    return RoIPlan(train, infer, train[:, :positives],
                   infer[:, :MASK_INFER_DETS])


def as_detections(boxes: Tensor) -> DetectionBatch:
    """Fixed boxes (N, M, 4) as M class-0 detections per image (what the mask floor reads)."""
    n, m = boxes.shape[:2]
    return DetectionBatch(boxes, boxes.new_ones(n, m), boxes.new_zeros(n, m, dtype=torch.long),
                          torch.full((n,), m, dtype=torch.long, device=boxes.device))


def det_floor(family: Family, model: nn.Module, plan: RoIPlan | None,
              training: bool) -> Callable[[Tensor], Any]:
    """images (N, 3, H, W) -> det's network outputs (module docstring)."""
    if family.kind != "two_stage":
        return model
    assert plan is not None
    rois = plan.train if training else plan.infer
    mask_dets = as_detections(plan.mask_train if training else plan.mask_infer)

    def run(x: Tensor) -> list[Any]:
        feats, rpn = model(x)
        outputs = [rpn, model.roi_head.box_outputs(feats, rois)[1:]]
        if model.roi_head.with_mask:
            outputs.append(model.roi_head.predict_mask_probs(feats, mask_dets))
        return outputs
    return run


def peer_floor(family: Family, model: nn.Module, plan: RoIPlan | None,
               training: bool, size: tuple[int, int]) -> Callable[[Tensor], Any]:
    """images (N, 3, H, W) -> torchvision's network outputs on the same fixed RoIs."""
    if family.kind != "two_stage":
        return lambda x: model.head(list(model.backbone(x).values()))
    assert plan is not None
    rois = list(plan.train if training else plan.infer)
    mask_rois = list(plan.mask_train if training else plan.mask_infer)
    heads = model.roi_heads

    def run(x: Tensor) -> list[Any]:
        feats = model.backbone(x)
        image_sizes = [size] * x.shape[0]
        outputs = [model.rpn.head(list(feats.values())),
                   heads.box_predictor(heads.box_head(heads.box_roi_pool(feats, rois,
                                                                         image_sizes)))]
        if heads.has_mask():
            pooled = heads.mask_roi_pool(feats, mask_rois, image_sizes)
            outputs.append(heads.mask_predictor(heads.mask_head(pooled)))
        return outputs
    return run
