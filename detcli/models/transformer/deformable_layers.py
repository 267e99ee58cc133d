"""Deformable DETR's transformer: multi-scale tokens, encoder and decoder (MMDetection 3.3's
``DeformableDetrTransformerEncoder/Decoder``, their names and wiring).

N images, L levels of maps (h_l, w_l), S = sum of h_l * w_l tokens, Q queries, D =
``embed_dims``, J decoder layers.

- :func:`multi_level_tokens`: every level's map flattened row-major and concatenated (N, S, D),
  with its padding mask (each level's own, nearest-resized from the input's), sine positions
  of that mask plus the level's ``level_embed`` row, and the valid ratios (N, L, 2) (w, h):
  the fraction of each level's columns and rows that lie in the image.
- Encoder layer: deformable ``self_attn`` of the tokens (value = the tokens, query = tokens +
  positions, padded tokens' values zeroed), ``norms.0``, ``ffn``, ``norms.1`` (post-norm).
  Each token's reference point is its pixel centre on its own level, normalised by the
  level's valid extent, then multiplied by every level's valid ratio: the same image point
  on each level (:func:`encoder_reference_points`).
- Decoder layer: ``self_attn`` among the queries (positions added to query and key),
  ``norms.0``, deformable ``cross_attn`` into the encoder's memory, ``norms.1``, ``ffn``,
  ``norms.2``. The queries' references are normalised to the image's valid part; each layer
  samples at reference x valid ratios. With box refinement (``reg_branches``, the head's), the
  reference moves after every layer to ``sigmoid(reg_j(h) + inverse_sigmoid(ref))`` (only the
  centre's two coordinates for point references) and is detached before the next layer. No
  final LayerNorm (MMDetection: ``post_norm_cfg`` None).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.ops.logits import inverse_sigmoid
from detcli.models.transformer.attention import (
    FFN,
    FFNConfig,
    MultiheadAttention,
    MultiheadAttentionConfig,
)
from detcli.models.transformer.deformable import (
    MultiScaleDeformableAttention,
    MultiScaleDeformableAttentionConfig,
    SpatialShapes,
)
from detcli.models.transformer.masks import feature_padding_mask
from detcli.registry import fields_of


def deformable_ffn() -> FFNConfig:
    return FFNConfig(feedforward_channels=1024, ffn_drop=0.1)


def decoder_self_attn() -> MultiheadAttentionConfig:
    return MultiheadAttentionConfig(dropout=0.1)


class DeformableEncoderLayerConfig(Schema):
    self_attn_cfg: MultiScaleDeformableAttentionConfig = Field(
        default_factory=MultiScaleDeformableAttentionConfig)
    ffn_cfg: FFNConfig = Field(default_factory=deformable_ffn)


class DeformableDecoderLayerConfig(Schema):
    self_attn_cfg: MultiheadAttentionConfig = Field(default_factory=decoder_self_attn)
    cross_attn_cfg: MultiScaleDeformableAttentionConfig = Field(
        default_factory=MultiScaleDeformableAttentionConfig)
    ffn_cfg: FFNConfig = Field(default_factory=deformable_ffn)


class DeformableDetrTransformerEncoderConfig(Schema):
    num_layers: int = Field(6, ge=1)
    layer_cfg: DeformableEncoderLayerConfig = Field(default_factory=DeformableEncoderLayerConfig)

    @property
    def embed_dims(self) -> int:
        return self.layer_cfg.self_attn_cfg.embed_dims

    @property
    def num_levels(self) -> int:
        return self.layer_cfg.self_attn_cfg.num_levels


class DeformableDetrTransformerDecoderConfig(Schema):
    num_layers: int = Field(6, ge=1)
    layer_cfg: DeformableDecoderLayerConfig = Field(default_factory=DeformableDecoderLayerConfig)
    return_intermediate: bool = True

    @property
    def embed_dims(self) -> int:
        return self.layer_cfg.self_attn_cfg.embed_dims

    @property
    def num_levels(self) -> int:
        return self.layer_cfg.cross_attn_cfg.num_levels


@dataclass(frozen=True)
class MultiLevelTokens:
    """The encoder's input: L maps as one sequence (module docstring)."""

    tokens: Tensor  # (N, S, D)
    pos: Tensor  # (N, S, D) sine positions + level embedding
    padding_mask: Tensor | None  # (N, S) bool, True on padding; None: no image is padded
    spatial_shapes: tuple[tuple[int, int], ...]  # (h_l, w_l)
    valid_ratios: Tensor  # (N, L, 2) (w, h) fraction of each level inside the image


def valid_ratios(mask: Tensor) -> Tensor:
    """(N, h, w) padding mask -> (N, 2) (w, h): the valid columns of the first row and the
    valid rows of the first column over the map's size (MMDetection's ``get_valid_ratio``)."""
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).to(torch.float32)
    valid_w = (~mask[:, 0, :]).sum(1).to(torch.float32)
    return torch.stack((valid_w / w, valid_h / h), -1)


def multi_level_tokens(feats: Sequence[Tensor], img_shapes: Tensor | None,
                       batch_shape: tuple[int, int], positional_encoding: nn.Module,
                       level_embed: Tensor) -> MultiLevelTokens:
    """L maps (N, D, h_l, w_l), the image shapes (N, 2) (None: every image fills the padded
    batch of ``batch_shape``) -> :class:`MultiLevelTokens`."""
    num = feats[0].shape[0]
    tokens, positions, masks, ratios, shapes = [], [], [], [], []
    for level, feat in enumerate(feats):
        h, w = feat.shape[-2:]
        if img_shapes is None:
            mask = torch.zeros((num, h, w), dtype=torch.bool, device=feat.device)
        else:
            mask = feature_padding_mask(img_shapes, batch_shape, (h, w))  # (N, h, w)
        pos = positional_encoding(mask).to(feat.dtype).flatten(2).transpose(1, 2)  # (N, hw, D)
        tokens.append(feat.flatten(2).transpose(1, 2))  # (N, hw, D)
        positions.append(pos + level_embed[level].to(feat.dtype)[None, None, :])
        masks.append(mask.flatten(1))
        ratios.append(valid_ratios(mask))
        shapes.append((h, w))
    return MultiLevelTokens(
        tokens=torch.cat(tokens, 1), pos=torch.cat(positions, 1),
        padding_mask=None if img_shapes is None else torch.cat(masks, 1),
        spatial_shapes=tuple(shapes), valid_ratios=torch.stack(ratios, 1))


def encoder_reference_points(spatial_shapes: SpatialShapes, valid_ratios: Tensor) -> Tensor:
    """Level shapes and valid ratios (N, L, 2) -> (N, S, L, 2) (x, y): each token's pixel
    centre over its level's valid extent, then scaled to every level's (module docstring)."""
    device = valid_ratios.device
    per_level = []
    for level, (h, w) in enumerate(spatial_shapes):
        ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float32, device=device)
        xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float32, device=device)
        ref_y, ref_x = torch.meshgrid(ys, xs, indexing="ij")  # (h, w)
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * h)  # (N, hw)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * w)
        per_level.append(torch.stack((ref_x, ref_y), -1))  # (N, hw, 2)
    return torch.cat(per_level, 1)[:, :, None] * valid_ratios[:, None]  # (N, S, L, 2)


class DeformableDetrTransformerEncoderLayer(nn.Module):
    """Deformable self-attention and FFN, each followed by a LayerNorm."""

    def __init__(self, cfg: DeformableEncoderLayerConfig) -> None:
        super().__init__()
        self.self_attn = MultiScaleDeformableAttention(**fields_of(cfg.self_attn_cfg))
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**fields_of(cfg.ffn_cfg))
        self.norms = nn.ModuleList(nn.LayerNorm(self.embed_dims) for _ in range(2))

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor | None,
                reference_points: Tensor, spatial_shapes: SpatialShapes) -> Tensor:
        """Tokens (N, S, D), positions, padding (N, S), references (N, S, L, 2) -> (N, S, D)."""
        query = self.self_attn(query, query, query_pos=query_pos,
                               key_padding_mask=key_padding_mask,
                               reference_points=reference_points, spatial_shapes=spatial_shapes)
        query = self.norms[0](query)
        return self.norms[1](self.ffn(query))


class DeformableDetrTransformerDecoderLayer(nn.Module):
    """Self-attention, deformable cross-attention and FFN, each followed by a LayerNorm."""

    def __init__(self, cfg: DeformableDecoderLayerConfig) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(**fields_of(cfg.self_attn_cfg))
        self.cross_attn = MultiScaleDeformableAttention(**fields_of(cfg.cross_attn_cfg))
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**fields_of(cfg.ffn_cfg))
        self.norms = nn.ModuleList(nn.LayerNorm(self.embed_dims) for _ in range(3))

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                memory_padding_mask: Tensor | None, reference_points: Tensor,
                spatial_shapes: SpatialShapes, self_attn_mask: Tensor | None = None) -> Tensor:
        """Queries (N, Q, D) and positions, memory (N, S, D) and its padding, references
        (N, Q, L, 2 or 4) per level, an optional (Q, Q) mask among the queries -> (N, Q, D)."""
        query = self.norms[0](self.self_attn(query, query_pos=query_pos, key_pos=query_pos,
                                             attn_mask=self_attn_mask))
        query = self.cross_attn(query, memory, query_pos=query_pos,
                                key_padding_mask=memory_padding_mask,
                                reference_points=reference_points, spatial_shapes=spatial_shapes)
        query = self.norms[1](query)
        return self.norms[2](self.ffn(query))


class DeformableDetrTransformerEncoder(nn.Module):
    """``num_layers`` encoder layers (``layers.i``) over the multi-level tokens."""

    def __init__(self, cfg: DeformableDetrTransformerEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableDetrTransformerEncoderLayer(cfg.layer_cfg)
                                    for _ in range(cfg.num_layers))
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, inputs: MultiLevelTokens) -> Tensor:
        """-> memory (N, S, D)."""
        reference_points = encoder_reference_points(inputs.spatial_shapes, inputs.valid_ratios)
        query = inputs.tokens
        for layer in self.layers:
            query = layer(query, inputs.pos, inputs.padding_mask,
                          reference_points.to(query.dtype), inputs.spatial_shapes)
        return query


class DeformableDetrTransformerDecoder(nn.Module):
    """``num_layers`` decoder layers with optional box refinement (module docstring)."""

    def __init__(self, cfg: DeformableDetrTransformerDecoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableDetrTransformerDecoderLayer(cfg.layer_cfg)
                                    for _ in range(cfg.num_layers))
        self.embed_dims = self.layers[0].embed_dims
        self.num_layers = cfg.num_layers
        self.return_intermediate = cfg.return_intermediate

    def forward(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                memory_padding_mask: Tensor | None, reference_points: Tensor,
                spatial_shapes: SpatialShapes, valid_ratios: Tensor,
                reg_branches: nn.ModuleList | None = None) -> tuple[Tensor, Tensor]:
        """Queries (N, Q, D), their positions, the memory (N, S, D) and its padding, initial
        references (N, Q, 2) (x, y) or (N, Q, 4) (cx, cy, w, h) in [0, 1] of the valid image,
        valid ratios (N, L, 2) -> hidden states (J, N, Q, D) and each layer's output reference
        (J, N, Q, 2 or 4) (``return_intermediate``; else the last layer's, (1, ...))."""
        states, references = [], []
        for index, layer in enumerate(self.layers):
            ratios = valid_ratios if reference_points.shape[-1] == 2 \
                else torch.cat((valid_ratios, valid_ratios), -1)  # (N, L, 2 or 4)
            per_level = reference_points[:, :, None] * ratios[:, None].to(reference_points)
            query = layer(query, query_pos, memory, memory_padding_mask, per_level,
                          spatial_shapes)
            if reg_branches is not None:
                reference_points = refine(reg_branches[index](query), reference_points)
            if self.return_intermediate:
                states.append(query)
                references.append(reference_points)
        if self.return_intermediate:
            return torch.stack(states), torch.stack(references)
        return query[None], reference_points[None]


def refine(deltas: Tensor, reference_points: Tensor) -> Tensor:
    """A reference (N, Q, 2 or 4) moved by a regression branch's output (N, Q, 4) in logit
    space, detached: boxes ``sigmoid(deltas + logit(ref))``; points the same on (x, y), the
    output's (w, h) from the deltas alone."""
    if reference_points.shape[-1] == 4:
        moved = deltas + inverse_sigmoid(reference_points)
    else:
        moved = torch.cat((deltas[..., :2] + inverse_sigmoid(reference_points), deltas[..., 2:]),
                          -1)
    return moved.sigmoid().detach()
