"""torchvision's RetinaNet and FCOS COCO weights in det's layout: the same networks, other names.

K det classes, C torchvision categories (COCO: 91, ``__background__`` and ``N/A`` gaps
included), A anchors per location (RetinaNet: 9). Both torchvision detectors are a ResNet-50,
an FPN on C3-C5 whose P6 and P7 come from ``LastLevelP6P7`` (a ReLU before P7, always) and a
two-tower head; each maps onto det's modules one to one when det's config describes the same
network (``docs/zoo.md`` gives the configs):

==========================  ================================================================
torchvision                 det
==========================  ================================================================
``backbone.body.*``         ``backbone.*``
``fpn.inner_blocks.i.0``    ``neck.lateral_convs.i.conv``
``fpn.layer_blocks.i.0``    ``neck.fpn_convs.i.conv``
``fpn.extra_blocks.p6/p7``  ``neck.fpn_convs.3/4.conv`` (FPN ``start_level = 1``,
                            ``relu_before_extra_convs = true``; v1 and FCOS: P6 from P5,
                            ``add_extra_convs = "on_output"``; RetinaNet v2: from C5,
                            ``"on_input"``)
RetinaNet head              ``bbox_head.cls_convs.i`` / ``reg_convs.i`` (``.conv``; v2's
``conv.i.0`` / ``conv.i.1``  GroupNorm ``.gn``: ``norm_cfg = {type = "GN", num_groups = 32}``),
                            ``retina_cls`` / ``retina_reg``
FCOS head ``conv.3i`` /     ``bbox_head.cls_convs.i.conv`` / ``.gn`` (``conv_bias = true``),
``conv.3i+1``               ``conv_cls``, ``conv_reg``, ``conv_centerness``
                            (``centerness_on_reg = true``, ``norm_on_bbox = true``), the
                            per-level ``scales`` set to 1 (torchvision has none)
==========================  ================================================================

- RetinaNet's anchors: torchvision orders a location's 9 anchors as det's AnchorGenerator
  does by default (``scale_major = true``: anchor r*3 + s for ratio r and size s), so the rows
  of ``cls_logits`` (A*C) and ``bbox_reg`` (A*4) keep their order.
- Classes: neither head has a background output; the classification rows are picked by class
  name (:func:`select_dense_classes`), as for Faster R-CNN.

What stays different after conversion (documented, measured by
``tests/models/test_dense_vs_torchvision.py``):
- RetinaNet: torchvision's anchor sizes are whole pixels (``int(32 * 2 ** (1 / 3)) = 40`` where
  det has 40.3) and its cell anchors are rounded; boxes differ by up to about a pixel.
- FCOS: torchvision puts a location's point at the corner of its stride cell; det's FCOSHead
  does so with ``prior_offset = 0`` (MMDetection, and det's default: the centre, 0.5).
  torchvision scores a box ``sqrt(p_class * p_centerness)`` and thresholds and ranks that,
  det (MMDetection) scores ``p_class * p_centerness`` and thresholds ``p_class``: det's score
  is the square of torchvision's, the order of the boxes the same.
- Both normalise images inside the model (the same mean and std as det's presets, on 0-1
  pixels) and resize to 800 x 1333 themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import torch
from torch import Tensor

from detcli.errors import CheckpointError

Rule = tuple[str, Union[str, Callable[[re.Match[str]], str]]]  # regex -> replacement

BACKBONE_RULES: tuple[Rule, ...] = (
    (r"^backbone\.body\.", "backbone."),
    (r"^backbone\.fpn\.inner_blocks\.(\d+)\.0\.", r"neck.lateral_convs.\1.conv."),
    (r"^backbone\.fpn\.layer_blocks\.(\d+)\.0\.", r"neck.fpn_convs.\1.conv."),
)
RETINANET_RULES: tuple[Rule, ...] = (
    (r"^head\.classification_head\.conv\.(\d+)\.0\.", r"bbox_head.cls_convs.\1.conv."),
    (r"^head\.classification_head\.conv\.(\d+)\.1\.", r"bbox_head.cls_convs.\1.gn."),
    (r"^head\.regression_head\.conv\.(\d+)\.0\.", r"bbox_head.reg_convs.\1.conv."),
    (r"^head\.regression_head\.conv\.(\d+)\.1\.", r"bbox_head.reg_convs.\1.gn."),
    (r"^head\.classification_head\.cls_logits\.", "bbox_head.retina_cls."),
    (r"^head\.regression_head\.bbox_reg\.", "bbox_head.retina_reg."),
)
FCOS_LAYER_PARTS = {0: "conv", 1: "gn"}  # torchvision's Sequential: conv, GroupNorm, ReLU


def _fcos_tower(tower: str) -> Callable[[re.Match[str]], str]:
    def replace(match: re.Match[str]) -> str:
        layer, part = divmod(int(match.group(1)), 3)
        return f"bbox_head.{tower}.{layer}.{FCOS_LAYER_PARTS.get(part, f'unknown{part}')}."
    return replace


FCOS_RULES: tuple[Rule, ...] = (
    (r"^head\.classification_head\.conv\.(\d+)\.", _fcos_tower("cls_convs")),
    (r"^head\.regression_head\.conv\.(\d+)\.", _fcos_tower("reg_convs")),
    (r"^head\.classification_head\.cls_logits\.", "bbox_head.conv_cls."),
    (r"^head\.regression_head\.bbox_reg\.", "bbox_head.conv_reg."),
    (r"^head\.regression_head\.bbox_ctrness\.", "bbox_head.conv_centerness."),
)


@dataclass(frozen=True)
class DenseFamily:
    """How one torchvision dense detector's state dict becomes det's.

    ``classifier``: torchvision's class-specific conv (without ``.weight`` / ``.bias``), its
    rows (A, C) anchor-major; ``ours``: det's key prefixes of the class-specific tensors, left
    at the model's initialisation when the classes do not match torchvision's."""

    label: str
    rules: tuple[Rule, ...]
    classifier: str
    ours: tuple[str, ...]
    unit_scales: bool = False  # torchvision has no per-level Scale: det's are set to 1
    hint: str = ""


RETINANET = DenseFamily(
    label="RetinaNet", rules=RETINANET_RULES, classifier="head.classification_head.cls_logits",
    ours=("bbox_head.retina_cls.",),
    hint="the model must be ResNet + FPN (start_level 1, add_extra_convs on_output for v1 / "
         "on_input for v2, relu_before_extra_convs) + RetinaHead (4 convs, 9 anchors; v2: "
         "norm_cfg GN 32); docs/zoo.md has the config")
FCOS = DenseFamily(
    label="FCOS", rules=FCOS_RULES, classifier="head.classification_head.cls_logits",
    ours=("bbox_head.conv_cls.",), unit_scales=True,
    hint="the model must be ResNet + FPN (start_level 1, add_extra_convs on_output, "
         "relu_before_extra_convs) + FCOSHead (GN, conv_bias, centerness_on_reg, "
         "norm_on_bbox); docs/zoo.md has the config")
DENSE_FAMILIES: dict[str, DenseFamily] = {
    "retinanet_resnet50_fpn": RETINANET,
    "retinanet_resnet50_fpn_v2": RETINANET,
    "fcos_resnet50_fpn": FCOS,
}


def rename(key: str, rules: Sequence[Rule]) -> str:
    """``key`` under the first rule whose pattern matches it (unchanged when none does)."""
    for pattern, replacement in rules:
        new, count = re.subn(pattern, replacement, key)
        if count:
            return new
    return key


def extra_level_rules(state: Mapping[str, Tensor]) -> tuple[Rule, ...]:
    """``LastLevelP6P7``'s p6 / p7 -> det's FPN convs after the L laterals' (L = 3 here)."""
    levels = {int(m.group(1)) for key in state
              if (m := re.match(r"^backbone\.fpn\.inner_blocks\.(\d+)\.", key))}
    first = len(levels)
    return ((r"^backbone\.fpn\.extra_blocks\.p6\.", f"neck.fpn_convs.{first}.conv."),
            (r"^backbone\.fpn\.extra_blocks\.p7\.", f"neck.fpn_convs.{first + 1}.conv."))


def dense_from_torchvision(family: DenseFamily, state: Mapping[str, Tensor],
                           own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's ``state`` -> a state dict for det's model whose own state dict is
    ``own``. A ``state`` without the classifier (classes not matched) gives one without det's
    class-specific tensors. CheckpointError naming the keys when the two do not correspond one
    to one (another architecture, class count or FPN extra-level setting)."""
    rules = BACKBONE_RULES + extra_level_rules(state) + family.rules
    mapped = {rename(key, rules): value for key, value in state.items()}
    for key, value in own.items():
        filled = (key.endswith("num_batches_tracked")  # FrozenBatchNorm2d has none
                  or (family.unit_scales and re.match(r"^bbox_head\.scales\.\d+\.scale$", key)))
        if key not in mapped and filled:
            mapped[key] = torch.ones_like(value) if key.endswith(".scale") else value
    with_classifier = family.classifier + ".weight" in state
    unknown = sorted(set(mapped) - set(own))
    missing = sorted(k for k in set(own) - set(mapped)
                     if with_classifier or not k.startswith(family.ours))
    wrong = sorted(k for k in set(mapped) & set(own) if mapped[k].shape != own[k].shape)
    if unknown or missing or wrong:
        raise CheckpointError(
            f"torchvision's {family.label} weights do not fit this model: "
            f"{len(unknown)} unknown keys {unknown[:3]}, {len(missing)} missing {missing[:3]}, "
            f"{len(wrong)} of another shape "
            + str([f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in wrong[:3]]),
            hint=family.hint)
    return mapped


def select_dense_classes(family: DenseFamily, state: Mapping[str, Tensor],
                         categories: Sequence[str],
                         classes: Sequence[str]) -> tuple[dict[str, Tensor], list[str]]:
    """torchvision's classifier cut down to ``classes`` -> (state, notes), torchvision's names.

    ``categories`` names its C classifier rows per anchor (background and ``N/A`` included);
    the result has, per anchor, the rows of ``classes`` in order (A*K). When a class name is
    not among ``categories`` the classifier is dropped (det's stays at its initialisation) and
    a note names the missing classes."""
    out = {k: v for k, v in state.items() if not k.startswith(family.classifier + ".")}
    missing = [name for name in classes if name not in categories]
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        return out, [f"the classifier is not loaded: torchvision's categories have no "
                     f"{shown}{more}; it starts from its own initialisation"]
    rows = torch.tensor([categories.index(name) for name in classes])  # (K,)
    for part in ("weight", "bias"):
        value = state[f"{family.classifier}.{part}"]  # (A*C, ...)
        if value.shape[0] % len(categories):
            raise CheckpointError(
                f"torchvision's {family.classifier}.{part} has {value.shape[0]} rows, not a "
                f"multiple of its {len(categories)} categories")
        grouped = value.reshape(-1, len(categories), *value.shape[1:])  # (A, C, ...)
        out[f"{family.classifier}.{part}"] = grouped[:, rows].reshape(-1, *value.shape[1:])
    return out, [f"classifier: {len(classes)} classes picked by name from torchvision's "
                 f"{sum(c not in ('__background__', 'N/A') for c in categories)} categories"]


def current_layout(name: str, state: Mapping[str, Tensor],
                   num_categories: int) -> dict[str, Tensor]:
    """A torchvision detector's downloaded ``state`` under today's key names: loaded into
    torchvision's own (randomly built, offline) ``name`` model, whose version hooks rename the
    keys older files use (``rpn.head.conv.weight``, ``mask_head.mask_fcn1``...). Its
    ``num_batches_tracked`` (torchvision's COCO files use FrozenBatchNorm2d) may be absent;
    any other key that does not load is a CheckpointError naming it."""
    from torchvision.models import get_model  # torchvision's model builders, only here

    model = get_model(name, weights=None, weights_backbone=None, num_classes=num_categories)
    try:
        result = model.load_state_dict(dict(state), strict=False)
    except RuntimeError as exc:  # a shape that differs
        raise CheckpointError(f"torchvision's {name} weights do not fit torchvision's own "
                              f"{name}: {exc}",
                              hint="the file may be of another torchvision model; delete it "
                                   "from the torch hub cache and download it again") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"torchvision's {name} weights do not fit torchvision's own {name}: "
            f"{len(missing)} missing keys {missing[:3]}, {len(result.unexpected_keys)} unknown "
            f"{result.unexpected_keys[:3]}",
            hint="the file may be of another torchvision model or version")
    return {k: v for k, v in model.state_dict().items()
            if k in state or not k.endswith("num_batches_tracked")}
