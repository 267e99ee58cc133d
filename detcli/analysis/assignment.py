"""Which anchors each GT box gets: the configured assigner and sampler run on the configured
anchors, with per-GT and per-level statistics, for analysis and visualisation (no network).

N images, R priors per image over all levels, L levels, G GT slots per image (padding slots
have label -1), I ignore-box slots. Boxes are (x1, y1, x2, y2) in network-input pixels (after
resize and pad). Codes of ``gt_index`` are :mod:`detcli.task.assigners.assign_result`'s:
``>= 0`` the matched GT, ``NEGATIVE = -1`` background, ``IGNORED = -2`` neither.

A *positive* is a prior with ``gt_index >= 0``. It is *low quality* when its IoU with its GT is
under the assigner's ``pos_iou_thr``: only MaxIoUAssigner's step 4 (each GT claims its best
priors) can give it. For an assigner without a threshold it is low quality when its prior's
centre lies outside its GT: only the dynamic soft-label assigner (RTMDet's) gives such, to a GT
with no candidate point of its own, which still takes its k >= 1 cheapest candidates -- points
inside other GTs, whose predicted boxes hardly overlap it. A GT is ``low_quality_only`` when it
has positives and all are such.

The head that assigns anchors is ``model.bbox_head`` with ``model.train_cfg`` (assigner, sampler,
``allowed_border``) in a single-stage detector, and ``model.rpn_head`` with
``model.train_cfg.rpn`` in a two-stage one: there the RPN assigns anchors to every GT as one
class, "object" (the GT labels do not change which anchor matches which GT). The RoI head's
sampling of proposals is :mod:`detcli.analysis.roi_sampling`'s.

That head is built from the config, untrained, and does the assigning itself: its
``explain_assignment`` (:mod:`detcli.models.protocols`) gets stand-in outputs of the right
feature-map sizes (no network runs; for an assigner that ranks priors by the model's
predictions, RTMDet's, the documented stand-in predictions of :mod:`detcli.analysis.stand_in`,
or a trained model's outputs when the caller has them) and returns every prior's GT, IoU and role from the same
assigner and sampler its loss runs; ``assignment_setup()`` says which priors, assigner and
``allowed_border`` that is (for a point head such as FCOS its points as stride-sized cells and
its target rule) and ``training_rule()`` which sampler the report names. This module computes
the per-GT statistics from that assignment. Parts built by hand (tests) assign through a bare
AnchorHead around their assigner and sampler.

Feature-map sizes follow ResNet + FPN on a padded input of H x W: level 0 is ceil(H / s_0) x
ceil(W / s_0) and each next level, whose stride doubles, is ceil(prev / 2) (stride-2 convs with
padding 1 round up). Priors on every location of that grid count, as the head's own
``valid_flags`` make them for an image of that padded size; with ``allowed_border >= 0``, priors
further outside the image than that are not eligible, as in training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from detcli.analysis import capabilities as can
from detcli.analysis.stand_in import stand_in_predictions
from detcli.config.schema import Schema
from detcli.errors import ConfigError
from detcli.ops.boxes import box_iou
from detcli.models.dense_heads.anchor_head import AnchorHead
from detcli.models.losses import CrossEntropyLossConfig, L1LossConfig
from detcli.models.protocols import DenseHead
from detcli.registry import BBOX_CODERS, LOSSES, SAMPLERS
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import DenseOutputs
from detcli.task.assigners.assign_result import IGNORED
from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoderConfig
from detcli.task.prior_generators.anchor_generator import anchor_inside_flags
from detcli.task.train_cfg import DenseTrainConfig

Stride = int | Sequence[int]  # s, or (s_w, s_h)


def featmap_sizes(pad_shape: tuple[int, int], strides: Sequence[Stride]) -> list[tuple[int, int]]:
    """(H_l, W_l) per level for a padded input ``pad_shape`` = (H, W); see the module docstring.

    ``strides`` are ints or (s_w, s_h) pairs. A level whose stride is not twice the previous
    one is ceil(H / s_l) x ceil(W / s_l) (the same number when it is: ceil(ceil(a/b)/c) =
    ceil(a/(bc)) for positive integers).
    """
    pairs = [(int(s), int(s)) if isinstance(s, (int, float)) else (int(s[0]), int(s[1]))
             for s in strides]
    height, width = int(pad_shape[0]), int(pad_shape[1])
    sizes: list[tuple[int, int]] = []
    for level, (stride_w, stride_h) in enumerate(pairs):
        prev = pairs[level - 1] if level else None
        if prev is not None and (stride_w, stride_h) == (2 * prev[0], 2 * prev[1]):
            prev_h, prev_w = sizes[-1]
            sizes.append((-(-prev_h // 2), -(-prev_w // 2)))
        else:
            sizes.append((-(-height // stride_h), -(-width // stride_w)))
    return sizes


@dataclass
class AssignmentParts:
    """The configured prior generator, assigner and sampler; built once from a config.
    ``head_key`` and ``train_cfg_key`` name where they come from (``model.rpn_head`` and
    ``model.train_cfg.rpn`` for a two-stage detector)."""

    prior_generator: Any
    assigner: Any
    sampler: Any
    num_levels: int
    strides: list  # per level, (s_w, s_h)
    allowed_border: int = -1
    anchor_cfg: Optional[Schema] = None  # the generator's config, for reports and the optimiser
    assigner_cfg: Optional[Schema] = None
    sampler_cfg: Optional[Schema] = None
    head_key: str = "model.bbox_head"
    generator_key: str = "anchor_generator"  # the head config's field of the priors
    train_cfg_key: str = "model.train_cfg"
    head: Optional[DenseHead] = None  # the built head whose explain_assignment assigns
    _priors: dict = field(default_factory=dict, repr=False)  # (pad_shape, device) -> (priors, level)

    @classmethod
    def from_config(cls, cfg: Any) -> AssignmentParts:
        """From a DetConfig; ConfigError (exit 2) for a head with neither anchors nor its own
        assignment, or without train_cfg. The head is built (untrained: only its assigner,
        sampler and priors take part) and assigns through its ``explain_assignment``."""
        head_cfg, train_cfg, head_key, train_key = can.assigning_head(cfg.model)
        queries = can.num_queries(cfg.model)
        if queries is not None:
            costs = ", ".join(can.match_cost_names(train_cfg)) or "none: train_cfg = false"
            raise ConfigError(
                f"model ({cfg.model.type}) is a query-based detector: it has no priors (anchors "
                f"or points) to analyse. Its training matches its {queries} learned queries "
                f"(model.num_queries) to the GT one to one, each GT to the query of least "
                f"cost ({train_key}.assigner: {costs}), and every other query learns "
                f"background",
                hint="an image with more GT boxes than num_queries cannot have them all "
                     "matched: raise model.num_queries for crowded images (detr_r50: 100); "
                     "`det analyze anchors CONFIG` counts them, `det viz assign IMAGE -c "
                     "CONFIG` shows an image's matching")
        if train_cfg is None:
            raise ConfigError(
                "model.train_cfg = false: there is no assigner to analyse",
                hint=f"remove `train_cfg = false`, or set {train_key}.assigner")
        head = can.build_assigning_head(head_cfg, train_cfg)
        described = can.describe_assignment(head_cfg, head)
        if described is None:
            kind = getattr(head_cfg, "type", type(cfg.model).__name__)
            own, rpn = can.assigning_heads(), can.proposal_heads()
            single = [name for name in can.anchor_heads() if name not in rpn]
            raise ConfigError(
                f"{head_key} ({kind}) has no anchor_generator: anchor analysis does not "
                f"apply to an anchor-free head",
                hint=f"heads with anchors: {', '.join(single) or '(none registered)'}"
                     + (f"; with points: {', '.join(own)}" if own else "")
                     + (f"; a two-stage detector's rpn_head: {', '.join(rpn)}" if rpn else ""))
        sampler_cfg = can.sampler_config(head, train_cfg)
        generator = described.prior_boxes
        parts = cls(prior_generator=generator, assigner=described.assigner,
                    sampler=SAMPLERS.build(sampler_cfg), num_levels=len(generator.strides),
                    strides=list(generator.strides), allowed_border=described.allowed_border,
                    anchor_cfg=described.generator_cfg, assigner_cfg=described.assigner_cfg,
                    sampler_cfg=sampler_cfg, head_key=head_key,
                    generator_key=described.generator_key, train_cfg_key=train_key,
                    head=head)
        probe, _ = parts.priors((max(max(s) for s in parts.strides),) * 2)
        if probe.shape[-1] != 4:
            raise ConfigError(
                f"{parts.anchor_key} ({getattr(parts.anchor_cfg, 'type', '?')}) makes "
                "points, not boxes: anchor analysis does not apply")
        return parts

    def __post_init__(self) -> None:
        if self.head is None:  # parts built by hand (no config): a bare head around them
            self.head = _bare_head(self)

    @property
    def anchor_key(self) -> str:
        """The config key of the priors the head declares (``generator_key``):
        ``<head_key>.anchor_generator``, FCOS's ``model.bbox_head.strides``."""
        return f"{self.head_key}.{self.generator_key}"

    def with_prior_generator(self, generator: Any, anchor_cfg: Optional[Schema] = None) -> AssignmentParts:
        """The same assigner and sampler on other anchors (the optimiser's candidates): a
        shallow copy of the head with ``generator`` as its prior generator."""
        head = copy.copy(self.head)
        head.prior_generator = generator
        return replace(self, prior_generator=generator, num_levels=len(generator.strides),
                       strides=list(generator.strides), anchor_cfg=anchor_cfg, head=head,
                       _priors={})

    @property
    def pos_iou_thr(self) -> Optional[float]:
        """The assigner's positive threshold, None for an assigner without one."""
        return can.pos_iou_thr(self.assigner)

    @property
    def point_based(self) -> bool:
        """Whether the priors stand for points (a head's own assignment, e.g. FCOS's cells)."""
        return getattr(self.anchor_cfg, "type", None) == "MlvlPointGenerator"

    def level_counts(self, pad_shape: tuple[int, int]) -> list[int]:
        """Priors on each level (H_l * W_l * A_l) for one padded input shape."""
        sizes = featmap_sizes(tuple(int(v) for v in pad_shape[:2]), self.strides)
        return [h * w * a for (h, w), a in zip(sizes, self.prior_generator.num_base_priors)]

    def priors(self, pad_shape: tuple[int, int],
               device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """(priors (R, 4), level (R,) int64) for one padded input shape; cached."""
        key = (tuple(int(v) for v in pad_shape[:2]), str(device))
        if key not in self._priors:
            per_level = self.prior_generator.grid_priors(
                featmap_sizes(key[0], self.strides), device=device)  # L x (H_l*W_l*A_l, 4)
            level = torch.cat([torch.full((p.shape[0],), lvl, dtype=torch.long, device=device)
                               for lvl, p in enumerate(per_level)])  # (R,)
            self._priors[key] = (torch.cat(per_level, dim=0), level)  # (R, 4), (R,)
        return self._priors[key]


def _bare_head(parts: AssignmentParts) -> DenseHead:
    """An untrained one-class AnchorHead whose assigner and sampler are ``parts``' (a sampling
    loss, so a budgeted sampler samples): hand-built parts assign through the same
    ``explain_assignment`` as a configured head."""
    head = AnchorHead(num_classes=1, prior_generator=parts.prior_generator,
                      bbox_coder=BBOX_CODERS.build(DeltaXYWHBBoxCoderConfig()),
                      loss_cls=LOSSES.build(CrossEntropyLossConfig(use_sigmoid=True)),
                      loss_bbox=LOSSES.build(L1LossConfig()),
                      train_cfg=DenseTrainConfig(allowed_border=parts.allowed_border))
    head.assigner, head.sampler = parts.assigner, parts.sampler
    return head


@dataclass
class ImageAssignment:
    """One image: R priors over all levels, G GT boxes (no padding)."""

    priors: Tensor  # (R, 4) network-input pixels
    level: Tensor  # (R,) int64 FPN level of each prior
    gt_index: Tensor  # (R,) AssignResult codes: >= 0 GT index, -1 negative, -2 ignored
    max_iou: Tensor  # (R,) IoU with the best GT
    sampled_pos: Tensor  # (R,) bool, from the configured sampler
    sampled_neg: Tensor  # (R,) bool
    gt_boxes: Tensor  # (G, 4) network-input pixels
    gt_labels: Tensor  # (G,)
    best_iou: Tensor  # (G,) best IoU of each GT with any (eligible) prior
    best_level: Tensor  # (G,) level of that best prior
    num_pos: Tensor  # (G,) positives assigned to each GT
    num_pos_per_level: Tensor  # (G, L)
    low_quality_only: Tensor  # (G,) bool: all its positives come from low-quality matching
    num_ignored: int  # priors coded IGNORED
    assigned_iou: Tensor  # (R,) IoU of each positive with its own GT, 0 elsewhere
    pad_shape: tuple[int, int] = (0, 0)


@dataclass
class BatchAssignment:
    """N images of one padded shape, GT padded to G slots: every field of
    :class:`ImageAssignment` with a leading N (G-indexed ones padded)."""

    priors: Tensor  # (R, 4)
    level: Tensor  # (R,)
    gt_index: Tensor  # (N, R)
    max_iou: Tensor  # (N, R)
    sampled_pos: Tensor  # (N, R)
    sampled_neg: Tensor  # (N, R)
    gt_boxes: Tensor  # (N, G, 4)
    gt_labels: Tensor  # (N, G), -1 on padding
    best_iou: Tensor  # (N, G)
    best_level: Tensor  # (N, G)
    num_pos: Tensor  # (N, G)
    num_pos_per_level: Tensor  # (N, G, L)
    low_quality_only: Tensor  # (N, G)
    num_ignored: Tensor  # (N,)
    assigned_iou: Tensor  # (N, R)
    pad_shape: tuple[int, int]

    def image(self, i: int) -> ImageAssignment:
        """Image ``i`` without its padding slots (valid slots come first, as DetTargets pads)."""
        num_gt = int((self.gt_labels[i] >= 0).sum())
        return ImageAssignment(
            priors=self.priors, level=self.level, gt_index=self.gt_index[i],
            max_iou=self.max_iou[i], sampled_pos=self.sampled_pos[i],
            sampled_neg=self.sampled_neg[i], gt_boxes=self.gt_boxes[i, :num_gt],
            gt_labels=self.gt_labels[i, :num_gt], best_iou=self.best_iou[i, :num_gt],
            best_level=self.best_level[i, :num_gt], num_pos=self.num_pos[i, :num_gt],
            num_pos_per_level=self.num_pos_per_level[i, :num_gt],
            low_quality_only=self.low_quality_only[i, :num_gt],
            num_ignored=int(self.num_ignored[i]), assigned_iou=self.assigned_iou[i],
            pad_shape=self.pad_shape,
        )


def _prior_valid(parts: AssignmentParts, priors: Tensor, num_images: int,
                 pad_shape: tuple[int, int], img_shapes: Optional[Tensor]) -> Optional[Tensor]:
    """(N, R) bool: priors within ``allowed_border`` of each image; None when all count."""
    if parts.allowed_border < 0:
        return None
    device = priors.device
    shapes = img_shapes if img_shapes is not None else \
        torch.tensor([pad_shape[:2]] * num_images, device=device)  # (N, 2)
    every = torch.ones(num_images, priors.shape[0], dtype=torch.bool, device=device)  # (N, R)
    return anchor_inside_flags(priors, every, shapes.to(device), parts.allowed_border)


def _shaped_outputs(parts: AssignmentParts, num_images: int, pad_shape: tuple[int, int],
                    device: torch.device) -> DenseOutputs:
    """Stand-in outputs with each level's feature-map size (the head reads only the sizes):
    L x (N, 1, H_l, W_l) views of one zero, no memory per location."""
    zero = torch.zeros((), device=device)
    maps = [zero.expand(num_images, 1, h, w)
            for h, w in featmap_sizes(tuple(int(v) for v in pad_shape[:2]), parts.strides)]
    return DenseOutputs(maps, maps)


def stand_in_outputs(parts: AssignmentParts, gt_boxes: Tensor, gt_labels: Tensor,
                     pad_shape: tuple[int, int],
                     generator: Optional[torch.Generator] = None) -> DenseOutputs:
    """Outputs of N images for a head whose assigner ranks priors by its predictions: the
    stand-in predictions of :mod:`detcli.analysis.stand_in` for gt_boxes (N, G, 4) and
    gt_labels (N, G), as the head's own outputs (``outputs_from_predictions``). Seeded by
    ``generator`` (default: seed 0)."""
    head = can.prediction_head(parts.head)
    cells, _ = parts.priors(pad_shape, gt_boxes.device)  # (R, 4)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    boxes, logits = stand_in_predictions(cells, gt_boxes, gt_labels, head.num_classes,
                                         generator=generator)  # (N, R, 4), (N, R, K)
    sizes = featmap_sizes(tuple(int(v) for v in pad_shape[:2]), parts.strides)
    return head.outputs_from_predictions(boxes, logits, sizes)


def shaped_images(num_images: int, pad_shape: tuple[int, int], img_shapes: Optional[Tensor],
                  device: torch.device) -> ImageBatch:
    """A batch of N images padded to ``pad_shape`` (no pixels: a zero-stride view), each of
    size ``img_shapes`` (N, 2), default the padded size."""
    height, width = int(pad_shape[0]), int(pad_shape[1])
    shapes = img_shapes.to(device=device, dtype=torch.long) if img_shapes is not None else \
        torch.tensor([[height, width]] * num_images, device=device)  # (N, 2)
    pads = torch.tensor([[height, width]] * num_images, device=device)  # (N, 2)
    return ImageBatch(tensor=torch.zeros((), device=device).expand(num_images, 3, height, width),
                      img_shapes=shapes, ori_shapes=[(height, width)] * num_images,
                      scale_factors=torch.ones(num_images, 4, device=device),
                      pad_shapes=pads, fills_batch=True)


def _good_positives(gt_index: Tensor, priors: Tensor, gt_boxes: Tensor, assigned_iou: Tensor,
                    pos_iou_thr: Optional[float]) -> Tensor:
    """(N, R) bool: the positives that are not low quality (module docstring), from codes
    (N, R), priors (R, 4), gt_boxes (N, G, 4) and each positive's IoU with its GT (N, R)."""
    pos = gt_index >= 0  # (N, R)
    if pos_iou_thr is not None:
        return pos & (assigned_iou >= pos_iou_thr)
    if gt_boxes.shape[1] == 0:
        return pos
    own = gt_boxes.gather(1, gt_index.clamp(min=0)[..., None].expand(-1, -1, 4))  # (N, R, 4)
    centre = ((priors[:, :2] + priors[:, 2:]) / 2)[None]  # (1, R, 2)
    inside = (centre > own[..., :2]).all(-1) & (centre < own[..., 2:]).all(-1)  # (N, R)
    return pos & inside


def _positives_per_gt(gt_index: Tensor, level: Tensor, good: Tensor, num_slots: int,
                      num_levels: int) -> tuple[Tensor, Tensor]:
    """(num_pos_per_level (N, G, L), low_quality_only (N, G)) from codes (N, R) of priors on
    levels (R,) and which positives are not low quality (N, R). Non-positives go to a spare
    bin."""
    num_images = gt_index.shape[0]
    pos = gt_index >= 0  # (N, R)
    slot_level = gt_index.clamp(min=0) * num_levels + level[None, :]  # (N, R) into G*L
    slot_level = torch.where(pos, slot_level, num_slots * num_levels)  # (N, R)
    counts = gt_index.new_zeros(num_images, num_slots * num_levels + 1)  # (N, G*L + 1)
    counts.scatter_add_(1, slot_level, torch.ones_like(slot_level))
    num_pos_per_level = counts[:, :-1].reshape(num_images, num_slots, num_levels)  # (N, G, L)
    num_good = gt_index.new_zeros(num_images, num_slots + 1)  # (N, G + 1)
    num_good.scatter_add_(1, torch.where(pos, gt_index, num_slots), (pos & good).long())
    return num_pos_per_level, (num_pos_per_level.sum(-1) > 0) & (num_good[:, :-1] == 0)


@torch.no_grad()
def assign_padded(
    parts: AssignmentParts,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pad_shape: tuple[int, int],
    ignore_boxes: Optional[Tensor] = None,
    ignore_valid: Optional[Tensor] = None,
    img_shapes: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    outputs: Optional[DenseOutputs] = None,
) -> BatchAssignment:
    """Assign N images of one padded shape at once: gt_boxes (N, G, 4), gt_labels (N, G) with
    -1 on padding, ignore_boxes (N, I, 4) with ignore_valid (N, I), img_shapes (N, 2) of (h, w)
    (only needed with ``allowed_border >= 0``; default ``pad_shape``). ``outputs``: the
    model's outputs for an assigner that ranks priors by them (default: the stand-in's,
    :func:`stand_in_outputs`; other assigners only read the feature-map sizes)."""
    device = gt_boxes.device
    num_images, num_slots = gt_labels.shape
    if ignore_boxes is None:
        ignore_boxes = gt_boxes.new_zeros(num_images, 0, 4)
    if ignore_valid is None:
        ignore_valid = torch.ones(ignore_boxes.shape[:2], dtype=torch.bool, device=device)
    targets = DetTargets(gt_boxes, gt_labels, ignore_boxes, ignore_valid)
    if outputs is None and can.needs_predictions(parts.assigner):
        outputs = stand_in_outputs(parts, gt_boxes, gt_labels, pad_shape, generator)
    elif outputs is None:
        outputs = _shaped_outputs(parts, num_images, pad_shape, device)
    explained = parts.head.explain_assignment(
        outputs,
        shaped_images(num_images, pad_shape, img_shapes, device), targets, generator)
    priors, level = explained.priors, explained.level  # (R, 4), (R,)
    gt_index = explained.gt_index  # (N, R)
    prior_valid = _prior_valid(parts, priors, num_images, pad_shape, img_shapes)  # (N, R)

    overlaps = box_iou(gt_boxes, priors)  # (N, G, R) float32
    if prior_valid is not None:
        overlaps = overlaps.masked_fill(~prior_valid[:, None, :], -1.0)
    if num_slots > 0:
        best_iou, best_prior = overlaps.max(dim=2)  # (N, G)
    else:
        best_iou = best_prior = gt_labels.new_zeros(num_images, 0)
    assigned_iou = explained.iou  # (N, R)
    good = _good_positives(gt_index, priors, gt_boxes, assigned_iou, parts.pos_iou_thr)
    num_pos_per_level, low_quality_only = _positives_per_gt(
        gt_index, level, good, num_slots, parts.num_levels)
    valid = gt_labels >= 0  # (N, G)
    return BatchAssignment(
        priors=priors, level=level, gt_index=gt_index, max_iou=explained.max_iou,
        sampled_pos=explained.positive, sampled_neg=explained.negative,
        gt_boxes=gt_boxes, gt_labels=gt_labels,
        best_iou=torch.where(valid, best_iou.clamp(min=0), 0.0), best_level=level[best_prior],
        num_pos=num_pos_per_level.sum(-1), num_pos_per_level=num_pos_per_level,
        low_quality_only=low_quality_only & valid, num_ignored=(gt_index == IGNORED).sum(dim=1),
        assigned_iou=assigned_iou, pad_shape=(int(pad_shape[0]), int(pad_shape[1])),
    )


def assign_image(
    parts: AssignmentParts,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    pad_shape: tuple[int, int],
    ignore_boxes: Optional[Tensor] = None,
    generator: Optional[torch.Generator] = None,
    img_shape: Optional[tuple[int, int]] = None,
    outputs: Optional[DenseOutputs] = None,
) -> ImageAssignment:
    """One image: gt_boxes (G, 4), gt_labels (G,), ignore_boxes (I, 4) in network-input pixels;
    ``outputs`` as :func:`assign_padded`'s."""
    device = gt_boxes.device
    ignore = ignore_boxes.reshape(1, -1, 4).to(gt_boxes) if ignore_boxes is not None else None
    shapes = torch.tensor([img_shape[:2]], device=device) if img_shape is not None else None
    batch = assign_padded(parts, gt_boxes.reshape(1, -1, 4), gt_labels.reshape(1, -1).long(),
                          pad_shape, ignore_boxes=ignore, img_shapes=shapes, generator=generator,
                          outputs=outputs)
    return batch.image(0)


def assign_batch(
    parts: AssignmentParts,
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    pad_shape: tuple[int, int],
    ignore_boxes: Optional[Sequence[Tensor]] = None,
    img_shapes: Optional[Sequence[tuple[int, int]]] = None,
    generator: Optional[torch.Generator] = None,
) -> list[ImageAssignment]:
    """Images of one padded shape, assigned in one call: per image (G_i, 4) boxes and (G_i,)
    labels (and (I_i, 4) ignore boxes) -> one :class:`ImageAssignment` each."""
    targets = DetTargets.from_lists(list(gt_boxes), [t.long() for t in gt_labels],
                                    list(ignore_boxes) if ignore_boxes is not None else None)
    device = targets.boxes.device
    shapes = torch.tensor([s[:2] for s in img_shapes], device=device) if img_shapes else None
    batch = assign_padded(parts, targets.boxes, targets.labels, pad_shape,
                          targets.ignore_boxes, targets.ignore_valid, shapes, generator)
    return [batch.image(i) for i in range(len(gt_boxes))]


def iou_elements(num_images: int, num_slots: int, num_priors: int) -> int:
    """Entries of the (N, G, R) IoU matrix a batch needs: callers size batches with it."""
    return num_images * max(num_slots, 1) * num_priors
