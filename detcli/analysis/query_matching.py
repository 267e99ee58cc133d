"""What ``det viz assign`` shows for a query-based detector (DETR): the Hungarian matching of
its queries to one image's GT boxes, with the cost terms of every match.

L decoder layers, Q queries, G GT boxes, C classifier outputs (K + 1 softmax logits with
background last, or K sigmoid logits). Boxes are (x1, y1, x2, y2) in network-input pixels.

The steps of :func:`visualize_query_matching`:

1. the assigner training runs, built from ``model.train_cfg.assigner`` through the registry
   (a :class:`~detcli.task.protocols.MatchingAssigner`: DETR's ``HungarianAssigner``);
2. the image and its GT through the config's pipeline
   (:func:`~detcli.analysis.assign_view.prepare`, as for the dense detectors);
3. the queries' class logits and boxes: a checkpoint's model on the prepared image, every
   decoder layer (``--checkpoint``), or without one the documented, seeded stand-in of
   :func:`stand_in_queries` (one layer);
4. :func:`explain_matching`: the assigner matches every layer's queries to the GT in one call
   (L problems, as the head's loss does), and its ``cost_terms`` give each weighted match cost
   of each pair; a GT's row holds the last layer's match (the prediction's), the terms and
   total of that pair, its IoU, the query of least total cost for that GT (another GT may have
   taken it: the matching minimises the sum) and, per layer, where the matched query's box
   was and which query that layer's own matching (its auxiliary loss) gives the GT.

For DINO, :class:`QueryMatching` carries ``denoising``
(:mod:`detcli.analysis.denoising_view`): its denoising queries of the prepared GT, drawn
with ``seed``, their noise and the last layer's box each predicts (the checkpoint's model, run
with them in front of its matching queries, or a seeded stand-in), and the attention mask
as counts. ``groups``: further queries tied to GT boxes that a caller's ``group_source``
makes from the prepared GT (a :data:`GroupSource`), each a :class:`QueryGroup`, drawn as
dots; none by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from detcli.analysis.assign_view import OriginalGT, pipeline_of, prepare
from detcli.analysis.checkpoint_model import checkpoint_model
from detcli.analysis.denoising_view import DenoisingView, denoising_generator, denoising_view
from detcli.analysis.pipeline_view import PipelineView
from detcli.analysis.proposals import network_input
from detcli.engine.device import resolve_device
from detcli.models.detectors.detr import QueryDetector
from detcli.models.detectors.dino import DINO
from detcli.errors import ConfigError, DetError
from detcli.ops.boxes import aligned_box_iou, cxcywh_to_xyxy
from detcli.registry import ASSIGNERS
from detcli.structures.batch import ImageBatch
from detcli.structures.queries import QueryOutputs
from detcli.task.protocols import MatchingAssigner

STAND_IN_QUERIES = 100  # the stand-in's queries when the config has more (a picture stays legible)
STAND_IN_SHIFT = 0.25  # centre error, in units of the GT's width / height
STAND_IN_SCALE = 0.25  # log-normal size error of each side


def stand_in_text(num_queries: int) -> str:
    """What the stand-in is, for the picture, the table and the JSON."""
    return (f"stand-in queries (no --checkpoint): {num_queries} boxes, query q around GT "
            f"q mod G, its centre moved by N(0, {STAND_IN_SHIFT:g}) x the GT's size and each "
            f"side scaled by exp(N(0, {STAND_IN_SCALE:g})), class logits N(0, 1); seeded")


@dataclass(frozen=True)
class CostTerm:
    """One match cost of a pair: its type, its weight and its weighted value (what enters the
    total)."""

    name: str
    weight: float
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "weight": self.weight, "value": self.value}


@dataclass(frozen=True)
class LayerStep:
    """The matched query of a GT at one decoder layer: its box there and the box's IoU with
    the GT; and the query this layer's own matching gives the GT, with its box (None:
    unmatched)."""

    layer: int
    box: list[float]
    iou: float
    layer_query: Optional[int]
    layer_box: Optional[list[float]]

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "box": self.box, "iou": self.iou,
                "layer_query": self.layer_query, "layer_box": self.layer_box}


@dataclass
class GTMatch:
    """One GT and the query the (last layer's) matching gives it; ``query`` is None when
    there are more GT boxes than queries and this one is left out."""

    index: int
    label: int
    class_name: str
    box: list[float]
    query: Optional[int]
    query_box: Optional[list[float]]
    terms: list[CostTerm]
    total: Optional[float]
    iou: Optional[float]
    cheapest_query: int  # the query of least total cost for this GT alone
    layers: list[LayerStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "class": self.class_name,
                "box": self.box, "query": self.query, "query_box": self.query_box,
                "costs": [t.to_dict() for t in self.terms], "total_cost": self.total,
                "iou": self.iou, "cheapest_query": self.cheapest_query,
                "layers": [s.to_dict() for s in self.layers]}


@dataclass
class QueryGroup:
    """Queries tied to GT boxes besides the matched ones, from a caller's ``group_source``
    (DINO's denoising queries have their own :class:`DenoisingView`): P boxes
    and the GT each belongs to (-1: none)."""

    name: str
    description: str
    boxes: np.ndarray  # (P, 4)
    gt_index: np.ndarray  # (P,) int64

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description,
                "boxes": np.round(self.boxes, 3).tolist(), "gt_index": self.gt_index.tolist()}


@dataclass
class QueryMatching:
    """Everything the picture and the table show, in network-input pixels."""

    image: np.ndarray  # (H, W, 3) uint8 BGR, de-normalised
    filename: str
    img_shape: tuple[int, int]  # (h, w) before padding
    pad_shape: tuple[int, int]  # (H, W)
    scale_factor: list[float]
    flip: bool
    class_names: tuple[str, ...]
    assigner: str  # "HungarianAssigner"
    costs: list[tuple[str, float]]  # the configured match costs: (type, weight)
    source: str  # "checkpoint" or "stand_in"
    source_text: str
    query_boxes: np.ndarray  # (Q, 4), the last layer's
    num_layers: int
    gts: list[GTMatch]
    groups: list[QueryGroup] = field(default_factory=list)
    denoising: Optional[DenoisingView] = None  # DINO's denoising queries

    @property
    def num_queries(self) -> int:
        return int(self.query_boxes.shape[0])

    @property
    def unmatched_gts(self) -> list[int]:
        return [gt.index for gt in self.gts if gt.query is None]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.filename, "input_shape": list(self.pad_shape),
                "img_shape": list(self.img_shape), "scale_factor": self.scale_factor,
                "flip": self.flip, "assigner": self.assigner,
                "match_costs": [{"name": n, "weight": w} for n, w in self.costs],
                "queries": {"source": self.source, "text": self.source_text,
                            "num_queries": self.num_queries, "num_layers": self.num_layers},
                "gts": [gt.to_dict() for gt in self.gts],
                "unmatched_gts": self.unmatched_gts,
                "groups": [g.to_dict() for g in self.groups],
                "denoising": None if self.denoising is None else self.denoising.to_dict()}


# GT boxes (G, 4) and labels (G,) of the prepared image, its (h, w) -> the extra query groups
GroupSource = Callable[[Tensor, Tensor, tuple[int, int]], list[QueryGroup]]


def _rounded(box: Sequence[float]) -> list[float]:
    return [round(float(v), 3) for v in box]


@torch.no_grad()
def explain_matching(assigner: MatchingAssigner, logits: Tensor, boxes: Tensor,
                     gt_boxes: Tensor, gt_labels: Tensor, img_shape: tuple[int, int],
                     class_names: Sequence[str] = ()) -> list[GTMatch]:
    """Each layer's queries matched by ``assigner``: logits (L, Q, C), boxes (L, Q, 4), GT
    (G, 4) and labels (G,) -> one :class:`GTMatch` per GT (module docstring, step 4)."""
    num_layers = logits.shape[0]
    num_gts = gt_boxes.shape[0]
    gt_rep = gt_boxes.float()[None].expand(num_layers, -1, -1)  # (L, G, 4)
    labels_rep = gt_labels.long()[None].expand(num_layers, -1)  # (L, G)
    shapes = torch.tensor([img_shape], dtype=torch.long).expand(num_layers, -1)  # (L, 2)
    match = assigner.match(logits, boxes, gt_rep, labels_rep, shapes).result
    gt_index = match.gt_index.cpu().numpy()  # (L, Q)
    if num_gts == 0:
        return []
    terms = [t[-1].cpu() for t in assigner.cost_terms(logits[-1:], boxes[-1:], gt_rep[-1:],
                                                      labels_rep[-1:], shapes[-1:])]  # (Q, G) each
    total = torch.stack(terms).sum(0)  # (Q, G)
    names = [(cfg.type, float(cfg.weight)) for cfg in assigner.match_cost_cfgs]
    last = gt_index[-1]  # (Q,)
    rows = []
    for g in range(num_gts):
        label = int(gt_labels[g])
        queries = np.flatnonzero(last == g)
        query = int(queries[0]) if queries.size else None
        steps = []
        if query is not None:
            for layer in range(num_layers):
                at = np.flatnonzero(gt_index[layer] == g)
                box = boxes[layer, query]
                iou = float(aligned_box_iou(box[None], gt_boxes[g:g + 1].float())[0])
                own = int(at[0]) if at.size else None
                steps.append(LayerStep(layer, _rounded(box.tolist()), round(iou, 4), own,
                                       None if own is None else _rounded(boxes[layer, own].tolist())))
        rows.append(GTMatch(
            index=g, label=label,
            class_name=class_names[label] if 0 <= label < len(class_names) else str(label),
            box=_rounded(gt_boxes[g].tolist()), query=query,
            query_box=None if query is None else _rounded(boxes[-1, query].tolist()),
            terms=[] if query is None else [CostTerm(n, w, round(float(t[query, g]), 6))
                                            for (n, w), t in zip(names, terms)],
            total=None if query is None else round(float(total[query, g]), 6),
            iou=None if query is None else steps[-1].iou,
            cheapest_query=int(total[:, g].argmin()), layers=steps if num_layers > 1 else []))
    return rows


def stand_in_queries(gt_boxes: np.ndarray, img_shape: tuple[int, int], num_queries: int,
                     num_outputs: int, seed: int) -> tuple[Tensor, Tensor]:
    """The stand-in of :func:`stand_in_text`: GT (G, 4) -> logits (1, Q, C) and boxes
    (1, Q, 4) inside the image (h, w); with no GT the boxes are random in the image."""
    gen = torch.Generator().manual_seed(seed)
    h, w = img_shape
    if len(gt_boxes):
        gt = torch.as_tensor(gt_boxes, dtype=torch.float32)[torch.arange(num_queries) % len(gt_boxes)]
    else:
        gt = torch.tensor([[0.0, 0.0, w, h]]).expand(num_queries, -1)  # (Q, 4)
    size = gt[:, 2:] - gt[:, :2]  # (Q, 2)
    centre = (gt[:, :2] + gt[:, 2:]) / 2 + torch.randn(num_queries, 2, generator=gen) * STAND_IN_SHIFT * size
    half = size * torch.exp(torch.randn(num_queries, 2, generator=gen) * STAND_IN_SCALE) / 2
    limit = torch.tensor([w, h], dtype=torch.float32)
    boxes = torch.cat([torch.minimum(torch.maximum(centre - half, torch.zeros(2)), limit),
                       torch.minimum(torch.maximum(centre + half, torch.zeros(2)), limit)], -1)
    logits = torch.randn(num_queries, num_outputs, generator=gen)  # (Q, C)
    return logits[None], boxes[None]


def _query_detector(model: nn.Module) -> QueryDetector:
    """``model`` if it is query-based, else DetError: the picture is for DETR's family."""
    if not isinstance(model, QueryDetector):
        raise DetError(f"{type(model).__name__} is not a query-based detector (QueryDetector): "
                       "the matching picture is for DETR and its descendants")
    return model


def _checkpoint_model(cfg: Any, checkpoint: str | Path, view: PipelineView,
                      pipeline: Sequence[Any], device: Optional[str],
                      class_names: Sequence[str]) -> tuple[QueryDetector, ImageBatch]:
    """``checkpoint``'s model in eval mode and the prepared image as its input, on the
    device; its ``meta.classes`` are checked against ``class_names``."""
    model = checkpoint_model(cfg, checkpoint, _query_detector, class_names, device)
    # the prepared image as one network input (a list scale_factor, as the assignment view's)
    images = network_input(replace(view, scale_factor=view.scale_factor.tolist()), pipeline)
    return model, images.to(resolve_device(device))


def _checkpoint_queries(model: QueryDetector, images: ImageBatch) -> QueryOutputs:
    """``model`` on the prepared image: every decoder layer's outputs (L, Q, ...) on the CPU."""
    with torch.no_grad():
        outputs = model.query_outputs(images.tensor, images.img_shapes)
    return QueryOutputs(outputs.cls_logits[:, 0].float().cpu(), outputs.boxes[:, 0].float().cpu())


def _num_outputs(cfg: Any) -> int:
    """C, the query head's classifier outputs: K + 1 (background last) with a softmax
    ``loss_cls``, K with a sigmoid one (DETRHead's rule)."""
    head = cfg.model.bbox_head
    return int(head.num_classes) + (0 if head.loss_cls.use_sigmoid else 1)


def visualize_query_matching(cfg: Any, image: Path, gt: OriginalGT, *,
                             train_pipeline: bool = False, seed: int = 0,
                             checkpoint: Optional[str | Path] = None,
                             device: Optional[str] = None,
                             group_source: Optional[GroupSource] = None) -> QueryMatching:
    """The matching of the config's queries to ``gt`` on ``image`` (module docstring);
    ``group_source`` adds the detector's extra query groups."""
    train_cfg = cfg.model.train_cfg
    if train_cfg is None:
        raise ConfigError("model.train_cfg = false: there is no assigner to show",
                          hint="remove `train_cfg = false`, or set model.train_cfg.assigner")
    assigner: MatchingAssigner = ASSIGNERS.build(train_cfg.assigner)
    pipeline = pipeline_of(cfg, train_pipeline)
    view = prepare(image, gt, pipeline, seed)
    h, w = view.img_shape
    model, images = None, None
    if checkpoint is not None:
        model, images = _checkpoint_model(cfg, checkpoint, view, pipeline, device, gt.class_names)
        outputs = _checkpoint_queries(model, images)
        logits = outputs.cls_logits  # (L, Q, C)
        factors = torch.tensor([w, h, w, h], dtype=torch.float32)
        boxes = cxcywh_to_xyxy(outputs.boxes) * factors  # (L, Q, 4) pixels
        source, text = "checkpoint", f"queries of {checkpoint}, every decoder layer"
    else:
        num = min(int(cfg.model.num_queries), STAND_IN_QUERIES)
        logits, boxes = stand_in_queries(view.gt_boxes, view.img_shape, num, _num_outputs(cfg), seed)
        source, text = "stand_in", stand_in_text(num)
    gt_boxes = torch.as_tensor(view.gt_boxes, dtype=torch.float32).reshape(-1, 4)
    gt_labels = torch.as_tensor(view.gt_labels, dtype=torch.long).reshape(-1)
    rows = explain_matching(assigner, logits, boxes, gt_boxes, gt_labels, view.img_shape,
                            gt.class_names)
    generator = denoising_generator(cfg.model)
    denoising = None if generator is None else denoising_view(
        generator, gt_boxes, gt_labels, view.img_shape, seed,
        model=model if isinstance(model, DINO) else None, images=images,
        checkpoint=None if checkpoint is None else str(checkpoint))
    return QueryMatching(
        image=view.image, filename=view.filename or str(image), img_shape=view.img_shape,
        pad_shape=view.pad_shape, scale_factor=[float(v) for v in view.scale_factor],
        flip=view.flip, class_names=gt.class_names, assigner=train_cfg.assigner.type,
        costs=[(c.type, float(c.weight)) for c in assigner.match_cost_cfgs], source=source,
        source_text=text, query_boxes=boxes[-1].numpy(), num_layers=int(boxes.shape[0]),
        gts=rows, groups=[] if group_source is None else group_source(gt_boxes, gt_labels,
                                                                       view.img_shape),
        denoising=denoising)

