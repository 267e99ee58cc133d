"""torchvision's Faster R-CNN weights in det's layout: the same network, other names and class order.

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

What stays different after conversion (so outputs agree closely, not exactly): torchvision
rounds its base anchors to whole pixels (MMDetection does not), pools with ``aligned = False``
and maps RoIs to levels by its own rule (canonical size 224 at level 4), normalises images
inside the model, and filters boxes under 1e-3 px.
"""

from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import Tensor

from detcli.errors import CheckpointError

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


def faster_rcnn_from_torchvision(state: Mapping[str, Tensor],
                                 own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's Faster R-CNN ``state`` -> a state dict for det's model whose own state
    dict is ``own`` (K classes; torchvision's has K + 1). CheckpointError naming the keys when
    the two do not correspond one to one (another architecture or class count)."""
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(PREDICTOR):
            continue
        for pattern, replacement in RENAMES:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        mapped[key] = value
    cls_w, cls_b = state[PREDICTOR + "cls_score.weight"], state[PREDICTOR + "cls_score.bias"]
    reg_w, reg_b = state[PREDICTOR + "bbox_pred.weight"], state[PREDICTOR + "bbox_pred.bias"]
    mapped["roi_head.bbox_head.fc_cls.weight"] = torch.cat([cls_w[1:], cls_w[:1]])  # (K + 1, F)
    mapped["roi_head.bbox_head.fc_cls.bias"] = torch.cat([cls_b[1:], cls_b[:1]])  # (K + 1,)
    mapped["roi_head.bbox_head.fc_reg.weight"] = reg_w[4:]  # (4K, F): background rows dropped
    mapped["roi_head.bbox_head.fc_reg.bias"] = reg_b[4:]  # (4K,)
    for key, value in own.items():
        if key not in mapped and key.endswith("num_batches_tracked"):
            mapped[key] = value
    unknown = sorted(set(mapped) - set(own))
    missing = sorted(set(own) - set(mapped))
    wrong = sorted(k for k in set(mapped) & set(own) if mapped[k].shape != own[k].shape)
    if unknown or missing or wrong:
        raise CheckpointError(
            "torchvision's Faster R-CNN weights do not fit this model: "
            f"{len(unknown)} unknown keys {unknown[:3]}, {len(missing)} missing {missing[:3]}, "
            f"{len(wrong)} of another shape {wrong[:3]}",
            hint="the model must be ResNet + FPN (start_level 0, max-pooled fifth level) + "
                 "RPNHead (3 anchors) + Shared2FCBBoxHead with torchvision's class count - 1")
    return mapped
