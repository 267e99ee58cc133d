"""torchvision's Faster R-CNN and Mask R-CNN weights in det's layout: the same networks, other
names and class order.

K foreground classes. torchvision's ``FasterRCNN`` (``fasterrcnn_resnet50_fpn`` and relatives,
built on ``_resnet_fpn_extractor`` with ``LastLevelMaxPool``) is the network of
``presets/faster_rcnn_r50.toml``: ResNet, an FPN whose fifth level max-pools the fourth, a
one-conv RPN head with 3 anchors per location, two 1024-wide fully connected layers and a
predictor. What differs:

- names: ``backbone.body.*`` -> ``backbone.*``; ``backbone.fpn.inner_blocks.i.0`` ->
  ``neck.lateral_convs.i.conv``; ``layer_blocks`` -> ``fpn_convs``; ``rpn.head.conv.0.0`` ->
  ``rpn_head.rpn_conv``; ``rpn.head.cls_logits`` / ``bbox_pred`` -> ``rpn_head.rpn_cls`` /
  ``rpn_reg``; ``roi_heads.box_head.fc6`` / ``fc7`` -> ``roi_head.bbox_head.shared_fcs.0`` /
  ``.1``;
- class order: torchvision's predictor has K + 1 classes with the background first
  (``cls_score`` rows background, 1..K) and regresses every class including the background
  (``bbox_pred`` 4 (K + 1) rows); det's ``fc_cls`` has the background last and ``fc_reg`` 4K
  rows. A torchvision label k >= 1 is det's k - 1;
- torchvision's ``FrozenBatchNorm2d`` has no ``num_batches_tracked``: the model's own count is
  kept.

``det train --init-from torchvision://fasterrcnn_resnet50_fpn`` (or ``load_from``) starts a run
from torchvision's COCO-trained weights, fetched through torchvision's weights API into torch's
hub cache the first time (:func:`torchvision_detector_state`). The predictor's rows are picked
by class name: each of the dataset's classes must be one of torchvision's COCO categories
(``person``, ``car``, ...), in any order and any subset; otherwise the predictor is left at its
initialisation and the run says which class names were not found.

torchvision's ``MaskRCNN`` (``maskrcnn_resnet50_fpn``) adds the mask branch of
``presets/mask_rcnn_r50.toml``: ``roi_heads.mask_head.i.0`` -> ``roi_head.mask_head.convs.i.conv``,
``roi_heads.mask_predictor.conv5_mask`` -> ``roi_head.mask_head.upsample``, and
``mask_predictor.mask_fcn_logits`` (K + 1 channels, the background first) ->
``roi_head.mask_head.conv_logits`` without the background channel
(:func:`mask_rcnn_from_torchvision`; ``--init-from torchvision://maskrcnn_resnet50_fpn``). Its
mask RoIAlign samples 2 x 2 points per bin (``sampling_ratio = 2``, det's presets: adaptive)
with ``aligned = False``, and it pastes masks by another rule (a one-cell border, then a
bilinear resize), so pasted masks differ at the edges.

What stays different after conversion (so outputs agree closely, not exactly): torchvision
rounds its base anchors to whole pixels (MMDetection does not), pools with ``aligned = False``
and maps RoIs to levels by its own rule (canonical size 224 at level 4), normalises images
inside the model, and filters boxes under 1e-3 px.
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor

from detcli.errors import CheckpointError
from detcli.models.pretrained import TORCHVISION_PREFIX, read_checkpoint
from detcli.models.torchvision_dense import (
    DENSE_FAMILIES,
    current_layout,
    dense_from_torchvision,
    select_dense_classes,
)

RENAMES = (  # regex on torchvision's key -> det's key
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"neck.lateral_convs.\1.conv."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"neck.fpn_convs.\1.conv."),
    (r"^rpn\.head\.conv\.0\.0\.", "rpn_head.rpn_conv."),
    (r"^rpn\.head\.cls_logits\.", "rpn_head.rpn_cls."),
    (r"^rpn\.head\.bbox_pred\.", "rpn_head.rpn_reg."),
    (r"^roi_heads\.box_head\.fc6\.", "roi_head.bbox_head.shared_fcs.0."),
    (r"^roi_heads\.box_head\.fc7\.", "roi_head.bbox_head.shared_fcs.1."),
)
PREDICTOR = "roi_heads.box_predictor."
PREDICTOR_OURS = ("roi_head.bbox_head.fc_cls.", "roi_head.bbox_head.fc_reg.")
MASK_RENAMES = (
    (r"^roi_heads\.mask_head\.(\d+)\.0\.", r"roi_head.mask_head.convs.\1.conv."),
    (r"^roi_heads\.mask_predictor\.conv5_mask\.", "roi_head.mask_head.upsample."),
)
MASK_LOGITS = "roi_heads.mask_predictor.mask_fcn_logits."
MASK_LOGITS_OURS = "roi_head.mask_head.conv_logits."


def faster_rcnn_from_torchvision(state: Mapping[str, Tensor],
                                 own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's Faster R-CNN ``state`` -> a state dict for det's model whose own state
    dict is ``own`` (K classes; torchvision's has K + 1). A ``state`` without the predictor
    gives one without ``fc_cls`` / ``fc_reg``. CheckpointError naming the keys when the two do
    not correspond one to one (another architecture or class count)."""
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(PREDICTOR):
            continue
        for pattern, replacement in RENAMES:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        mapped[key] = value
    with_predictor = PREDICTOR + "cls_score.weight" in state
    if with_predictor:
        cls_w, cls_b = state[PREDICTOR + "cls_score.weight"], state[PREDICTOR + "cls_score.bias"]
        reg_w, reg_b = state[PREDICTOR + "bbox_pred.weight"], state[PREDICTOR + "bbox_pred.bias"]
        mapped["roi_head.bbox_head.fc_cls.weight"] = torch.cat([cls_w[1:], cls_w[:1]])  # (K+1, F)
        mapped["roi_head.bbox_head.fc_cls.bias"] = torch.cat([cls_b[1:], cls_b[:1]])  # (K + 1,)
        mapped["roi_head.bbox_head.fc_reg.weight"] = reg_w[4:]  # (4K, F): background dropped
        mapped["roi_head.bbox_head.fc_reg.bias"] = reg_b[4:]  # (4K,)
    for key, value in own.items():
        if key not in mapped and key.endswith("num_batches_tracked"):
            mapped[key] = value
    unknown = sorted(set(mapped) - set(own))
    missing = sorted(k for k in set(own) - set(mapped)
                     if with_predictor or not k.startswith(PREDICTOR_OURS))
    wrong = sorted(k for k in set(mapped) & set(own) if mapped[k].shape != own[k].shape)
    if unknown or missing or wrong:
        raise CheckpointError(
            "torchvision's Faster R-CNN weights do not fit this model: "
            f"{len(unknown)} unknown keys {unknown[:3]}, {len(missing)} missing {missing[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}",
            hint="the model must be ResNet + FPN (start_level 0, max-pooled fifth level) + "
                 "RPNHead (3 anchors) + Shared2FCBBoxHead with torchvision's class count - 1")
    return mapped


def select_classes(state: Mapping[str, Tensor], categories: Sequence[str],
                   classes: Sequence[str]) -> tuple[dict[str, Tensor], list[str]]:
    """torchvision's predictor cut down to ``classes`` -> (state, notes).

    ``categories`` names torchvision's predictor rows (background first, e.g. COCO's 91 with
    ``N/A`` gaps). The result keeps torchvision's layout with K + 1 rows: background, then each
    of ``classes`` in order (a Mask R-CNN's mask logit channels too, the same rows). When a
    class name is not among ``categories``, the predictor is dropped (the model keeps its own
    initialisation) and a note names the missing classes."""
    out = {k: v for k, v in state.items()
           if not k.startswith(PREDICTOR) and not k.startswith(MASK_LOGITS)}
    missing = [name for name in classes if name not in categories]
    if missing:
        what = ("the box predictor and mask logits are" if MASK_LOGITS + "weight" in state
                else "the box predictor is")
        return out, [f"{what} not loaded: torchvision's categories have no "
                     f"{', '.join(repr(m) for m in missing[:5])}"
                     + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
                     + "; it starts from its own initialisation"]
    rows = torch.tensor([0] + [categories.index(name) for name in classes])  # (K + 1,)
    box_rows = (rows[1:, None] * 4 + torch.arange(4)).reshape(-1)  # (4K,)
    box_rows = torch.cat([torch.arange(4), box_rows])  # (4 (K + 1),) background first
    for name, index in (("cls_score", rows), ("bbox_pred", box_rows)):
        for part in ("weight", "bias"):
            out[f"{PREDICTOR}{name}.{part}"] = state[f"{PREDICTOR}{name}.{part}"][index]
    if MASK_LOGITS + "weight" in state:  # Mask R-CNN: one mask channel per class, the same rows
        for part in ("weight", "bias"):
            out[MASK_LOGITS + part] = state[MASK_LOGITS + part][rows]
    return out, [f"box predictor: {len(classes)} classes picked by name from torchvision's "
                 f"{len(categories) - 1} categories"]


def mask_rcnn_from_torchvision(state: Mapping[str, Tensor],
                               own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's Mask R-CNN ``state`` -> a state dict for det's MaskRCNN whose own state
    dict is ``own``: the Faster R-CNN part as :func:`faster_rcnn_from_torchvision`, the mask
    head renamed, its logits without the background channel. A ``state`` without the mask
    logits (its predictor dropped by :func:`select_classes`) gives one without
    ``conv_logits``. CheckpointError naming the keys when the two do not correspond."""
    mask = {k: v for k, v in state.items() if k.startswith("roi_heads.mask_")}
    boxes = {k: v for k, v in state.items() if k not in mask}
    box_own = {k: v for k, v in own.items() if not k.startswith("roi_head.mask_head.")}
    mapped = faster_rcnn_from_torchvision(boxes, box_own)
    mask_own = {k: v for k, v in own.items() if k.startswith("roi_head.mask_head.")}
    for key, value in mask.items():
        if key.startswith(MASK_LOGITS):
            mapped[MASK_LOGITS_OURS + key[len(MASK_LOGITS):]] = value[1:]  # background dropped
            continue
        for pattern, replacement in MASK_RENAMES:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        mapped[key] = value
    with_logits = MASK_LOGITS + "weight" in state
    got = {k for k in mapped if k.startswith("roi_head.mask_head.")}
    unknown = sorted(got - set(mask_own))
    missing = sorted(k for k in set(mask_own) - got
                     if with_logits or not k.startswith(MASK_LOGITS_OURS))
    wrong = sorted(k for k in got & set(mask_own) if mapped[k].shape != mask_own[k].shape)
    if unknown or missing or wrong:
        raise CheckpointError(
            "torchvision's Mask R-CNN mask head does not fit this model's: "
            f"{len(unknown)} unknown keys {unknown[:3]}, {len(missing)} missing {missing[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}",
            hint="the mask head must be FCNMaskHead with 4 convs of 256 channels, a deconv "
                 "upsample and torchvision's class count - 1")
    return mapped


Converter = Callable[[Mapping[str, Tensor], Mapping[str, Tensor]], dict[str, Tensor]]
CONVERTERS: dict[str, Converter] = {"fasterrcnn_resnet50_fpn": faster_rcnn_from_torchvision,
                                    "maskrcnn_resnet50_fpn": mask_rcnn_from_torchvision}


def download_detector(name: str) -> tuple[dict[str, Tensor], list[str]]:
    """torchvision's default (COCO) weights of detector ``name`` -> (state dict under today's
    key names, category names of its predictor rows), from torch's hub cache or downloaded
    into it."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    categories = list(weights.meta["categories"])
    return current_layout(name, read_checkpoint(weights.url), len(categories)), categories


def converted_names() -> list[str]:
    """The torchvision detectors whose COCO weights ``torchvision://NAME`` converts."""
    return sorted([*CONVERTERS, *DENSE_FAMILIES])


def torchvision_detector_state(checkpoint: str, own: Mapping[str, Tensor],
                               classes: Sequence[str]) -> tuple[dict[str, Tensor], list[str]]:
    """``torchvision://NAME`` -> (a state dict for the model whose state dict is ``own``,
    notes): NAME's COCO weights converted, the predictor picked by ``classes`` names."""
    name = checkpoint.removeprefix(TORCHVISION_PREFIX)
    if name not in CONVERTERS and name not in DENSE_FAMILIES:
        raise CheckpointError(
            f"{checkpoint}: det converts torchvision's {', '.join(converted_names())} weights, "
            f"not {name!r}",
            hint="torchvision://NAME as a backbone's init_cfg.checkpoint takes ImageNet weights")
    state, categories = download_detector(name)
    if name in DENSE_FAMILIES:  # RetinaNet, FCOS: a classifier without background rows
        family = DENSE_FAMILIES[name]
        state, notes = select_dense_classes(family, state, categories, classes)
        return dense_from_torchvision(family, state, own), notes
    state, notes = select_classes(state, categories, classes)
    return CONVERTERS[name](state, own), notes
