"""What ``det viz attention`` shows: where one decoder layer's deformable cross-attention
(:class:`~detcli.models.transformer.deformable.MultiScaleDeformableAttention`) samples for a
few queries of a Deformable DETR or DINO on one image, and with which weights.

N images (1 here), J decoder layers, Q queries, M heads, L levels, P points per head and
level; (H, W) the padded network input, (h_l, w_l) level l's map. Boxes are (x1, y1, x2, y2)
and points (x, y), both in network-input pixels.

The steps of :func:`visualize_attention`:

1. the config's model must have a decoder of deformable layers
   (:func:`deformable_decoder_config`); otherwise a ConfigError names the detector types that
   have one (:func:`deformable_detectors`);
2. the image through the config's test pipeline (:func:`~detcli.analysis.assign_view.prepare`,
   without GT);
3. the model: a checkpoint's (``--checkpoint``) or, without one, the seeded stand-in of
   :func:`stand_in_text` -- the config's detector as its constructor initialises it under
   ``torch.manual_seed(seed)``, untrained;
4. one forward pass (``query_outputs``, eval mode, no grad) with a :class:`SamplingRecorder`
   on layer j's ``cross_attn``: a forward pre-hook that calls the module's own ``sampling`` on
   the arguments the layer passed (the query plus its position, the reference points, the
   level shapes) and returns None, so the pass computes exactly what it computes without it;
5. the queries: those asked for, or the top K by their best class score at the last layer
   (the prediction's);
6. :func:`query_attention`: into pixels. A sampling location (u, v) in [0, 1] of a level's
   map is (u W, v H): every level's map spans the padded input (the model's padding mask is
   the input's, resized to each map). The same holds for each level's reference point (the
   decoder's reference times that level's valid ratios) and, for a decoder of reference
   boxes (two-stage Deformable DETR, DINO), each level's reference box. The box drawn is the
   query's prediction at layer j -- what that layer's output regresses -- from (cx, cy, w, h)
   of the valid image (h, w). Per level: its share of the attention (the weights summed over
   its points and heads, over M: the shares of the L levels sum to 1) and the mean distance of
   its M x P points from its reference point, plain and weighted by attention.

The encoder's self-attention (every token a query) is not recorded.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from detcli.analysis.assign_view import OriginalGT, config_class_names, pipeline_of, prepare
from detcli.analysis import capabilities as can
from detcli.analysis.checkpoint_model import checkpoint_model
from detcli.analysis.proposals import network_input
from detcli.engine.device import resolve_device
from detcli.errors import ConfigError, DetError
from detcli.models.build import build_detector
from detcli.models.detectors.detr import QueryDetector
from detcli.models.transformer.deformable import MultiScaleDeformableAttention
from detcli.models.transformer.deformable_layers import (
    DeformableDetrTransformerDecoder,
    DeformableDetrTransformerDecoderConfig,
    DeformableDetrTransformerDecoderLayer,
)
from detcli.ops.boxes import cxcywh_to_xyxy
from detcli.registry import DETECTORS
from detcli.structures.batch import ImageBatch
from detcli.structures.queries import QueryOutputs

log = logging.getLogger(__name__)

DEFAULT_TOP = 3  # queries drawn when none are named


def stand_in_text(detector: str, seed: int) -> str:
    """What the stand-in model is, for the picture, the table and the JSON."""
    return (f"stand-in model (no --checkpoint): {detector} with seeded (seed {seed}) untrained "
            "weights: the offsets and weights are MMCV's initial ones (head m along the angle "
            "2 pi m / M, point p at p + 1 pixels of its level, or at (p + 1) / P of a "
            "reference box's half size; uniform weights 1 / (L x P)); the references, boxes "
            "and scores are an untrained network's")


# -- recording the sampling -------------------------------------------------------------------

@dataclass(frozen=True)
class SamplingRecord:
    """One call of a MultiScaleDeformableAttention: where it sampled and with which weights."""

    locations: Tensor  # (N, Q, M, L, P, 2) (x, y) in [0, 1] of each level's map
    weights: Tensor  # (N, Q, M, L, P), a softmax over the L x P points of each head
    reference_points: Tensor  # (N, Q, L, 2) (x, y) or (N, Q, L, 4) (cx, cy, w, h), normalised
    spatial_shapes: tuple[tuple[int, int], ...]  # (h_l, w_l)


class SamplingRecorder:
    """``with SamplingRecorder(attn) as recorder:`` -- every call of ``attn`` inside the block
    appends a :class:`SamplingRecord` to ``recorder.records``. A forward pre-hook (PyTorch's
    ``register_forward_pre_hook(with_kwargs=True)``), removed when the block ends; it reads the
    call's arguments and returns None, so the call itself is unchanged."""

    def __init__(self, attn: MultiScaleDeformableAttention) -> None:
        self.attn = attn
        self.records: list[SamplingRecord] = []
        self._signature = inspect.signature(attn.forward)
        self._handle: Optional[torch.utils.hooks.RemovableHandle] = None

    def __enter__(self) -> SamplingRecorder:
        self._handle = self.attn.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @torch.no_grad()
    def _record(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        given = self._signature.bind(*args, **kwargs)
        given.apply_defaults()
        query, query_pos = given.arguments["query"], given.arguments["query_pos"]
        if query_pos is not None:  # as forward adds it
            query = query + query_pos
        references = given.arguments["reference_points"]
        shapes = tuple((int(h), int(w)) for h, w in given.arguments["spatial_shapes"])
        locations, weights = self.attn.sampling(query, references, shapes)
        self.records.append(SamplingRecord(locations.float().cpu(), weights.float().cpu(),
                                           references.float().cpu(), shapes))


# -- which configs and models have deformable attention ----------------------------------------

def deformable_decoder_config(model_cfg: Any) -> Optional[DeformableDetrTransformerDecoderConfig]:
    """The model config's decoder of deformable layers (a field holding a
    DeformableDetrTransformerDecoderConfig), or None."""
    for name in type(model_cfg).model_fields:
        value = getattr(model_cfg, name)
        if isinstance(value, DeformableDetrTransformerDecoderConfig):
            return value
    return None


def deformable_detectors() -> list[str]:
    """The registered detector types whose config has a decoder of deformable layers."""
    found = []
    for name in DETECTORS.names():
        for info in DETECTORS.config(name).model_fields.values():
            kind = info.annotation
            if isinstance(kind, type) and issubclass(kind, DeformableDetrTransformerDecoderConfig):
                found.append(name)
                break
    return found


def decoder_layers(model: nn.Module) -> list[DeformableDetrTransformerDecoderLayer]:
    """The layers of the model's deformable decoder (DetError when it has none)."""
    for module in model.modules():
        if isinstance(module, DeformableDetrTransformerDecoder):
            return [layer for layer in module.layers
                    if isinstance(layer, DeformableDetrTransformerDecoderLayer)]
    raise DetError(f"{type(model).__name__} has no deformable decoder")


# -- one query in pixels ----------------------------------------------------------------------

@dataclass(frozen=True)
class LevelAttention:
    """One level's part of a query's attention."""

    level: int
    map_shape: tuple[int, int]  # (h_l, w_l)
    weight_mass: float  # its weights summed over points and heads, over M
    mean_distance: float  # mean pixel distance of its M x P points from its reference point
    weighted_distance: float  # the same, weighted by attention

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "map_shape": list(self.map_shape),
                "weight_mass": round(self.weight_mass, 6),
                "mean_distance": round(self.mean_distance, 3),
                "weighted_distance": round(self.weighted_distance, 3)}


@dataclass
class QueryAttention:
    """Where one query sampled at the recorded layer, in network-input pixels."""

    query: int
    label: int
    class_name: str
    score: float  # its best class score at the last layer
    box: Optional[list[float]]  # its predicted box at the recorded layer
    reference: np.ndarray  # (L, 2) each level's reference point
    reference_box: Optional[np.ndarray]  # (L, 4) each level's reference box; None: points
    points: np.ndarray  # (M, L, P, 2)
    weights: np.ndarray  # (M, L, P)
    levels: list[LevelAttention]

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "label": self.label, "class": self.class_name,
                "score": round(self.score, 6), "box": self.box,
                "reference": np.round(self.reference, 3).tolist(),
                "reference_box": None if self.reference_box is None
                else np.round(self.reference_box, 3).tolist(),
                "levels": [lv.to_dict() for lv in self.levels],
                "points": np.round(self.points, 3).tolist(),
                "weights": np.round(self.weights, 6).tolist()}


def query_attention(record: SamplingRecord, query: int, pad_shape: tuple[int, int], *,
                    image: int = 0, label: int = -1, class_name: str = "", score: float = 0.0,
                    box: Optional[list[float]] = None) -> QueryAttention:
    """Query ``query`` of image ``image`` in ``record``, in pixels of the (H, W) input
    ``pad_shape`` (module docstring, step 6)."""
    height, width = pad_shape
    size = torch.tensor([width, height], dtype=torch.float32)
    points = record.locations[image, query] * size  # (M, L, P, 2)
    weights = record.weights[image, query]  # (M, L, P)
    refs = record.reference_points[image, query]  # (L, 2) or (L, 4)
    centre = refs[:, :2] * size  # (L, 2)
    ref_box = None if refs.shape[-1] == 2 else cxcywh_to_xyxy(refs) * size.repeat(2)  # (L, 4)
    distance = (points - centre[None, :, None]).norm(dim=-1)  # (M, L, P)
    heads = weights.shape[0]
    levels = []
    for level, shape in enumerate(record.spatial_shapes):
        w, d = weights[:, level], distance[:, level]  # (M, P)
        mass = float(w.sum())
        levels.append(LevelAttention(
            level=level, map_shape=shape, weight_mass=mass / heads,
            mean_distance=float(d.mean()),
            weighted_distance=float((w * d).sum() / mass) if mass > 0 else float("nan")))
    return QueryAttention(query=query, label=label, class_name=class_name, score=score, box=box,
                          reference=centre.numpy(),
                          reference_box=None if ref_box is None else ref_box.numpy(),
                          points=points.numpy(), weights=weights.numpy(), levels=levels)


def check_queries(queries: Sequence[int], count: int) -> None:
    """DetError naming the valid range (``count`` queries) for a query index out of it."""
    bad = [q for q in queries if not 0 <= q < count]
    if bad:
        raise DetError(f"--query {bad[0]}: the model has {count} queries (0 to {count - 1})")


def select_queries(scores: Tensor, queries: Optional[Sequence[int]], top: int) -> list[int]:
    """The queries asked for (each in range), or the ``top`` of (Q,) ``scores``, best first."""
    num = int(scores.shape[0])
    if queries:
        check_queries(queries, num)
        return list(dict.fromkeys(int(q) for q in queries))
    if top < 1:
        raise DetError(f"--top {top}: draw at least one query")
    return [int(q) for q in scores.topk(min(top, num)).indices]


# -- the view ---------------------------------------------------------------------------------

@dataclass
class AttentionView:
    """Everything the pictures and the table show, in network-input pixels."""

    image: np.ndarray  # (H, W, 3) uint8 BGR, de-normalised
    filename: str
    img_shape: tuple[int, int]  # (h, w) before padding
    pad_shape: tuple[int, int]  # (H, W)
    scale_factor: list[float]
    detector: str
    class_names: tuple[str, ...]
    layer: int
    num_layers: int
    num_queries: int
    num_heads: int
    num_points: int
    spatial_shapes: tuple[tuple[int, int], ...]
    reference_kind: str  # "point" or "box"
    source: str  # "checkpoint" or "stand_in"
    source_text: str
    selection: str  # "top 3 by score" or "--query"
    queries: list[QueryAttention]

    @property
    def num_levels(self) -> int:
        return len(self.spatial_shapes)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.filename, "input_shape": list(self.pad_shape),
                "img_shape": list(self.img_shape), "scale_factor": self.scale_factor,
                "detector": self.detector, "layer": self.layer, "num_layers": self.num_layers,
                "num_queries": self.num_queries, "num_heads": self.num_heads,
                "num_levels": self.num_levels, "num_points": self.num_points,
                "spatial_shapes": [list(s) for s in self.spatial_shapes],
                "reference": self.reference_kind,
                "model": {"source": self.source, "text": self.source_text},
                "selection": self.selection,
                "queries": [q.to_dict() for q in self.queries]}


def _query_detector(model: nn.Module) -> QueryDetector:
    """``model`` if it is query-based, else DetError."""
    if not isinstance(model, QueryDetector):
        raise DetError(f"{type(model).__name__} is not a query-based detector (QueryDetector)")
    return model


def _model(cfg: Any, checkpoint: Optional[str | Path], seed: int, class_names: Sequence[str],
           device: Optional[str]) -> QueryDetector:
    """The checkpoint's model on ``device``, or the seeded stand-in (step 3), in eval mode; the
    caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        if checkpoint is not None:
            return checkpoint_model(cfg, checkpoint, _query_detector, class_names, device)
        torch.manual_seed(seed)
        model = _query_detector(build_detector(cfg.model))
    return model.eval().to(resolve_device(device))


def _class_scores(cfg: Any, logits: Tensor) -> Tensor:
    """(Q, C) last-layer logits -> (Q, K) scores: sigmoid, or softmax without background."""
    if cfg.model.bbox_head.loss_cls.use_sigmoid:
        return logits.sigmoid()
    return logits.softmax(-1)[:, :-1]


def run_recorded(model: QueryDetector, attn: MultiScaleDeformableAttention,
                 images: ImageBatch) -> tuple[SamplingRecord, QueryOutputs]:
    """One forward pass of ``model`` on ``images`` with a recorder on ``attn`` (step 4): its
    record and the model's outputs (J, N, Q, ...)."""
    with SamplingRecorder(attn) as recorder, torch.no_grad():
        outputs = model.query_outputs(images.tensor, images.img_shapes)
    if len(recorder.records) != 1:
        raise DetError(f"the recorded cross-attention ran {len(recorder.records)} times in one "
                       "forward pass; expected once")
    return recorder.records[0], outputs


def visualize_attention(cfg: Any, image: Path, *, config_name: str = "the config",
                        checkpoint: Optional[str | Path] = None,
                        queries: Optional[Sequence[int]] = None, top: int = DEFAULT_TOP,
                        layer: Optional[int] = None, seed: int = 0,
                        device: Optional[str] = None) -> AttentionView:
    """Where layer ``layer`` (default: the last) of the config's deformable decoder samples
    for ``queries`` (default: the ``top`` scoring) on ``image`` (module docstring)."""
    decoder_cfg = deformable_decoder_config(cfg.model)
    if decoder_cfg is None:
        raise ConfigError(f"{config_name} configures a {cfg.model.type}, which has no "
                          "deformable attention: det viz attention draws the sampling of a "
                          "decoder's MultiScaleDeformableAttention, which these detectors have: "
                          f"{', '.join(deformable_detectors())}",
                          hint="try a Deformable DETR or DINO preset: det viz attention "
                               "dino_tiny_synth IMAGE")
    num_layers = decoder_cfg.num_layers
    layer = num_layers - 1 if layer is None else layer
    if not 0 <= layer < num_layers:
        raise DetError(f"--layer {layer}: the decoder has {num_layers} layers "
                       f"(0 to {num_layers - 1})")
    if not decoder_cfg.return_intermediate and layer != num_layers - 1:
        raise DetError(f"--layer {layer}: model.decoder.return_intermediate is false, so only "
                       f"the last layer ({num_layers - 1}) predicts boxes")
    configured = can.num_queries(cfg.model)
    if queries and configured is not None:  # before the model runs
        check_queries(queries, configured)
    class_names = config_class_names(cfg)
    pipeline = pipeline_of(cfg, False)
    view = prepare(image, OriginalGT.from_boxes([], [], class_names, source="none"), pipeline,
                   seed)
    model = _model(cfg, checkpoint, seed, class_names, device)
    images = network_input(replace(view, scale_factor=view.scale_factor.tolist()),
                           pipeline).to(resolve_device(device))
    attn = decoder_layers(model)[layer].cross_attn
    record, outputs = run_recorded(model, attn, images)
    scores, labels = _class_scores(cfg, outputs.cls_logits[-1, 0].float().cpu()).max(-1)  # (Q,)
    chosen = select_queries(scores, queries, top)
    box_layer = layer if outputs.boxes.shape[0] == num_layers else -1
    h, w = view.img_shape
    boxes = cxcywh_to_xyxy(outputs.boxes[box_layer, 0].float().cpu()) \
        * torch.tensor([w, h, w, h], dtype=torch.float32)  # (Q, 4)
    rows = []
    for q in chosen:
        label = int(labels[q])
        rows.append(query_attention(
            record, q, view.pad_shape, label=label,
            class_name=class_names[label] if 0 <= label < len(class_names) else str(label),
            score=float(scores[q]), box=[round(float(v), 3) for v in boxes[q]]))
    log.debug("%s: decoder layer %d, queries %s", image, layer, chosen)
    return AttentionView(
        image=view.image, filename=view.filename or str(image), img_shape=view.img_shape,
        pad_shape=view.pad_shape, scale_factor=[float(v) for v in view.scale_factor],
        detector=cfg.model.type, class_names=class_names, layer=layer, num_layers=num_layers,
        num_queries=int(scores.shape[0]), num_heads=attn.num_heads, num_points=attn.num_points,
        spatial_shapes=record.spatial_shapes,
        reference_kind="point" if record.reference_points.shape[-1] == 2 else "box",
        source="stand_in" if checkpoint is None else "checkpoint",
        source_text=stand_in_text(cfg.model.type, seed) if checkpoint is None
        else f"the model of {checkpoint}",
        selection="--query" if queries else f"top {len(chosen)} by score", queries=rows)
