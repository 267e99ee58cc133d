"""What ``det viz assign`` shows of DINO's contrastive denoising queries on one image: which
denoising queries belong to which GT box, the noise each got, what each predicts, and what the
attention mask keeps apart.

G GT boxes of the image (its GT slots: a batch of one image has no padding), P denoising
groups, D = 2 * P * G denoising queries, Q matching queries, K classes. Boxes are
(x1, y1, x2, y2) in network-input pixels.

The queries are the config's :class:`~detcli.models.transformer.denoising.CdnQueryGenerator`'s
(its layout, its noise rule, its attention mask): nothing here re-derives them.

1. P from the GT count (``group_cfg``); the noise is drawn from a ``torch.Generator`` seeded
   with ``--seed`` (:func:`seeded_noise`), so the same seed gives the same queries, with or
   without a checkpoint;
2. per query (:class:`DenoisingQuery`): its group, positive or negative, its GT, the noised
   box -- the reference box the decoder starts from: the generator's ``noisy_boxes`` clamped
   to the image, through (cx, cy, w, h) logits and back, so a box whose noise crossed its
   corners (w or h below 0) is the near-empty box the decoder sees -- and its IoU with the
   GT, the noised label (``noisy_labels``) and whether it differs from the GT's, and the noise
   magnitude: the largest corner move as a fraction of the GT's side, before clamping
   (``part * box_noise_scale / 2``: below ``box_noise_scale / 2`` for a positive, between that
   and ``box_noise_scale`` for a negative);
3. the final decoder layer's box of each query: a checkpoint's DINO run on the prepared image
   with these queries in front of its matching ones (:func:`checkpoint_predictions`, with the
   sigmoid score of the GT's class), or the seeded stand-in of :func:`stand_in_text`;
4. the attention mask as counts (:class:`AttentionSummary`): what the matching queries see of
   the denoising ones (nothing), what a denoising query sees of other groups (nothing), of its
   own group and of the matching queries (everything).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from detcli.models.detectors.dino import DINO, DINOConfig
from detcli.models.transformer.denoising import CdnNoise, CdnQueryGenerator, DenoisingQueries
from detcli.ops.boxes import aligned_box_iou, cxcywh_to_xyxy
from detcli.structures.batch import ImageBatch

STAND_IN_SHIFT = 0.1  # the stand-in positive prediction's centre error, in GT sides
STAND_IN_SCALE = 0.1  # its log-normal size error of each side


def stand_in_text() -> str:
    """What the stand-in denoising predictions are, for the picture, the table and the JSON."""
    return (f"stand-in denoising predictions (no --checkpoint): a positive query predicts "
            f"its GT with the centre moved by N(0, {STAND_IN_SHIFT:g}) x the GT's size and "
            f"each side scaled by exp(N(0, {STAND_IN_SCALE:g})); a negative one keeps its "
            f"noised box (no box loss trains it); seeded, not a model's")


@dataclass(frozen=True)
class DenoisingQuery:
    """One denoising query: ``index`` among the D (the decoder's first D queries)."""

    index: int
    group: int
    negative: bool
    gt_index: int
    box: list[float]  # the noised box the decoder starts from (module docstring, step 2)
    label: int  # the noised label
    label_flipped: bool  # the noised label is not the GT's
    noise: float  # the largest corner move in GT sides, before clamping
    iou: float  # of the noised box with its GT
    pred_box: Optional[list[float]] = None  # the last decoder layer's box
    pred_iou: Optional[float] = None  # of that box with the GT
    pred_score: Optional[float] = None  # checkpoint: the sigmoid score of the GT's class

    @property
    def role(self) -> str:
        return "negative" if self.negative else "positive"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "group": self.group, "role": self.role,
                "box": self.box, "label": self.label, "label_flipped": self.label_flipped,
                "noise": self.noise, "iou": self.iou, "pred_box": self.pred_box,
                "pred_iou": self.pred_iou, "pred_score": self.pred_score}


@dataclass(frozen=True)
class AttentionSummary:
    """The (D + Q, D + Q) self-attention mask as counts of visible (row may attend to column)
    pairs, by block."""

    size: int  # D + Q
    masked: int  # pairs that may not attend
    matching_sees_denoising: int  # 0: the matching queries must not learn from the GT
    denoising_sees_other_groups: int  # 0: a group must not copy another's answer
    denoising_sees_own_group: int  # P * (2G)^2
    denoising_sees_matching: int  # D * Q
    matching_sees_matching: int  # Q * Q

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class DenoisingView:
    """The denoising part of the batch of one image (module docstring)."""

    num_groups: int  # P
    num_gts: int  # G
    num_matching: int  # Q
    group_rule: str
    label_noise_scale: float
    box_noise_scale: float
    source: str  # "checkpoint" or "stand_in": where the predicted boxes come from
    source_text: str
    queries: list[DenoisingQuery]
    attention: AttentionSummary
    gt_labels: list[int] = field(default_factory=list)

    @property
    def num_queries(self) -> int:
        """D = 2 * P * G."""
        return 2 * self.num_groups * self.num_gts

    def of_gt(self, gt_index: int, groups: Optional[int] = None) -> list[DenoisingQuery]:
        """GT ``gt_index``'s queries (of the first ``groups`` groups), by index."""
        return [q for q in self.queries
                if q.gt_index == gt_index and (groups is None or q.group < groups)]

    def to_dict(self) -> dict[str, Any]:
        return {"num_groups": self.num_groups, "num_gts": self.num_gts,
                "num_queries": self.num_queries, "num_matching_queries": self.num_matching,
                "group_rule": self.group_rule, "label_noise_scale": self.label_noise_scale,
                "box_noise_scale": self.box_noise_scale,
                "predictions": {"source": self.source, "text": self.source_text},
                "attention_mask": self.attention.to_dict(),
                "gts": [{"index": g, "label": label,
                         "positive": [q.index for q in self.of_gt(g) if not q.negative],
                         "negative": [q.index for q in self.of_gt(g) if q.negative],
                         "queries": [q.to_dict() for q in self.of_gt(g)]}
                        for g, label in enumerate(self.gt_labels)]}


def denoising_generator(model_cfg: Any) -> Optional[CdnQueryGenerator]:
    """The config's denoising-query generator, untrained (DINO's ``model.dn_cfg``); None for a
    query-based detector without denoising queries."""
    if not isinstance(model_cfg, DINOConfig):
        return None
    return CdnQueryGenerator.from_config(
        model_cfg.dn_cfg, num_classes=model_cfg.bbox_head.num_classes,
        embed_dims=model_cfg.decoder.embed_dims, num_matching_queries=model_cfg.num_queries)


def group_rule(generator: CdnQueryGenerator, num_gts: int) -> str:
    """How P follows from the config and the GT count, in words and numbers."""
    cfg = generator.group_cfg
    if not cfg.dynamic:
        return f"static: P = group_cfg.num_groups = {cfg.num_groups}"
    if num_gts == 0:
        return "dynamic: no GT, P = 1 (no denoising query)"
    return (f"dynamic: P = max(num_dn_queries // G, 1) = max({cfg.num_dn_queries} // "
            f"{num_gts}, 1) = {generator.num_groups(num_gts)}")


def seeded_noise(generator: CdnQueryGenerator, num_gts: int, seed: int) -> CdnNoise:
    """The draws of one image's denoising queries from a generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return generator.draw_noise(1, generator.num_groups(num_gts), num_gts, "cpu", generator=gen)


def attention_summary(generator: CdnQueryGenerator, dn: DenoisingQueries) -> AttentionSummary:
    """:class:`AttentionSummary` of the generator's mask for ``dn``'s layout."""
    visible = ~generator.attention_mask(dn.meta, "cpu")  # (D + Q, D + Q)
    d = dn.meta.num_queries
    group = dn.meta.layout()[0]  # (D,)
    same = group[:, None] == group[None, :]  # (D, D)
    return AttentionSummary(
        size=int(visible.shape[0]), masked=int((~visible).sum()),
        matching_sees_denoising=int(visible[d:, :d].sum()),
        denoising_sees_other_groups=int((visible[:d, :d] & ~same).sum()),
        denoising_sees_own_group=int((visible[:d, :d] & same).sum()),
        denoising_sees_matching=int(visible[:d, d:].sum()),
        matching_sees_matching=int(visible[d:, d:].sum()))


def _rounded(box: Sequence[float]) -> list[float]:
    return [round(float(v), 3) for v in box]


@torch.no_grad()
def explain_denoising(generator: CdnQueryGenerator, gt_boxes: Tensor, gt_labels: Tensor,
                      img_shape: tuple[int, int], noise: CdnNoise,
                      pred_boxes: Optional[Tensor] = None, pred_scores: Optional[Tensor] = None,
                      source: str = "none", source_text: str = "") -> DenoisingView:
    """GT (G, 4) and labels (G,) of an image (h, w), the draws ``noise`` (1, 2P, G) and the
    predicted boxes (D, 4) and GT-class scores (D,) (None: not predicted) -> the view (module
    docstring, steps 1, 2 and 4)."""
    num_gts = int(gt_boxes.shape[0])
    h, w = img_shape
    shapes = torch.tensor([[h, w]])
    dn = generator(gt_boxes[None].float(), gt_labels[None].long(), shapes, noise)
    group, negative, slot = dn.meta.layout()  # (D,) each
    factors = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = cxcywh_to_xyxy(dn.bbox_query[0].sigmoid()) * factors  # (D, 4) the references
    labels = generator.noisy_labels(gt_labels[None].long(), noise)[0].reshape(-1)  # (D,)
    part = noise.box_part[0] + (torch.arange(noise.box_part.shape[1]) % 2)[:, None, None]
    noise_size = (part.amax(-1) * generator.box_noise_scale / 2).reshape(-1)  # (D,)
    gt_of = gt_boxes.float()[slot]  # (D, 4)
    ious = aligned_box_iou(boxes, gt_of) if len(boxes) else torch.zeros(0)
    pred_ious = None if pred_boxes is None else aligned_box_iou(pred_boxes.float(), gt_of)
    queries = []
    for i in range(dn.meta.num_queries):
        gt_label = int(gt_labels[slot[i]])
        queries.append(DenoisingQuery(
            index=i, group=int(group[i]), negative=bool(negative[i]), gt_index=int(slot[i]),
            box=_rounded(boxes[i].tolist()), label=int(labels[i]),
            label_flipped=int(labels[i]) != gt_label, noise=round(float(noise_size[i]), 4),
            iou=round(float(ious[i]), 4),
            pred_box=None if pred_boxes is None else _rounded(pred_boxes[i].tolist()),
            pred_iou=None if pred_ious is None else round(float(pred_ious[i]), 4),
            pred_score=None if pred_scores is None else round(float(pred_scores[i]), 4)))
    return DenoisingView(
        num_groups=dn.meta.num_groups, num_gts=num_gts,
        num_matching=generator.num_matching_queries, group_rule=group_rule(generator, num_gts),
        label_noise_scale=generator.label_noise_scale,
        box_noise_scale=generator.box_noise_scale, source=source, source_text=source_text,
        queries=queries, attention=attention_summary(generator, dn),
        gt_labels=[int(v) for v in gt_labels])


def stand_in_predictions(noised: Tensor, negative: Tensor, gt_of: Tensor,
                         img_shape: tuple[int, int], seed: int) -> Tensor:
    """The stand-in of :func:`stand_in_text`: noised boxes (D, 4), which are negative (D,),
    their GT (D, 4) -> predicted boxes (D, 4) inside the image (h, w)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = img_shape
    size = gt_of[:, 2:] - gt_of[:, :2]  # (D, 2)
    shift = torch.randn(len(gt_of), 2, generator=gen) * STAND_IN_SHIFT * size  # (D, 2)
    centre = (gt_of[:, :2] + gt_of[:, 2:]) / 2 + shift
    half = size * torch.exp(torch.randn(len(gt_of), 2, generator=gen) * STAND_IN_SCALE) / 2
    limit = torch.tensor([w, h, w, h], dtype=torch.float32)
    positive = torch.cat([centre - half, centre + half], -1).clamp(min=0.0)
    positive = torch.minimum(positive, limit)
    return torch.where(negative[:, None], noised, positive)


@torch.no_grad()
def checkpoint_predictions(model: DINO, images: ImageBatch, gt_boxes: Tensor, gt_labels: Tensor,
                           noise: CdnNoise) -> tuple[Tensor, Tensor]:
    """``model`` on the prepared image with the denoising queries of ``noise`` in front of
    its matching queries -> the last decoder layer's boxes (D, 4) in pixels and the sigmoid
    score of each query's GT class (D,), on the CPU."""
    device = images.tensor.device
    dn = model.dn_query_generator(gt_boxes[None].float().to(device),
                                  gt_labels[None].long().to(device), images.img_shapes,
                                  CdnNoise(**{k: v.to(device) for k, v in vars(noise).items()}))
    outputs, _ = model.run(images.tensor, images.img_shapes, dn)
    d = dn.meta.num_queries
    h, w = (int(v) for v in images.img_shapes[0])
    factors = torch.tensor([w, h, w, h], dtype=torch.float32)
    boxes = cxcywh_to_xyxy(outputs.boxes[-1, 0, :d].float().cpu()) * factors  # (D, 4)
    logits = outputs.cls_logits[-1, 0, :d].float().cpu()  # (D, K)
    slot = dn.meta.layout()[2]
    scores = logits.sigmoid().gather(1, gt_labels.long()[slot][:, None])[:, 0]  # (D,)
    return boxes, scores


def denoising_view(generator: CdnQueryGenerator, gt_boxes: Tensor, gt_labels: Tensor,
                   img_shape: tuple[int, int], seed: int, *, model: Optional[DINO] = None,
                   images: Optional[ImageBatch] = None,
                   checkpoint: Optional[str] = None) -> DenoisingView:
    """The whole view (module docstring): with ``model`` and ``images`` (a checkpoint's DINO
    and the prepared image) its predictions, else the stand-in's (seeded with ``seed + 1``,
    so they are not the stand-in matching queries' draws)."""
    noise = seeded_noise(generator, int(gt_boxes.shape[0]), seed)
    view = explain_denoising(generator, gt_boxes, gt_labels, img_shape, noise)
    if not view.queries:
        return view
    if model is not None and images is not None:
        boxes, scores = checkpoint_predictions(model, images, gt_boxes, gt_labels, noise)
        source, text = "checkpoint", (f"denoising predictions of {checkpoint}, last decoder "
                                      "layer; score: the GT class's sigmoid")
    else:
        noised = torch.tensor([q.box for q in view.queries], dtype=torch.float32)
        negative = torch.tensor([q.negative for q in view.queries])
        gt_of = gt_boxes.float()[torch.tensor([q.gt_index for q in view.queries])]
        boxes, scores = stand_in_predictions(noised, negative, gt_of, img_shape, seed + 1), None
        source, text = "stand_in", stand_in_text()
    return explain_denoising(generator, gt_boxes, gt_labels, img_shape, noise, boxes, scores,
                             source, text)
