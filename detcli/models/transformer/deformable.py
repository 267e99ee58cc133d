"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021) in pure PyTorch.

N images, Q queries, S = sum of h_l * w_l value tokens over the L levels, M = ``num_heads``,
P = ``num_points`` per head and level, D = ``embed_dims``, Dh = D / M.

Each query looks at P points per head and level instead of at every token: a linear layer
of the query (with its position) gives the points' offsets from the query's reference point,
another their weights (a softmax over the L x P points of a head), and the output is the
weighted sum of the bilinearly sampled values. MMCV's ``MultiScaleDeformableAttention`` and
its reference function ``multi_scale_deformable_attn_pytorch`` define the semantics kept here:

- sampling locations are normalised to the level's map, (0, 0) the top-left corner of the
  top-left pixel and (1, 1) the bottom-right corner of the bottom-right one (so pixel j's
  centre is (j + 0.5) / w); a value is read with ``F.grid_sample`` (bilinear,
  ``align_corners=False``, zero outside the map);
- reference points (N, Q, L, 2) (x, y): location = reference + offset / (w_l, h_l), the
  offset in pixels of the level; reference boxes (N, Q, L, 4) (cx, cy, w, h): location =
  centre + offset / P * (w, h) / 2;
- ``key_padding_mask`` (N, S) True on padded tokens: their projected values are zero;
- output = ``identity + dropout(output_proj(sampled))``, ``identity`` the query without its
  position unless given.

Unlike MMCV's CUDA kernel there is no ``im2col_step``: the whole batch is sampled at once,
level by level, and the levels' weighted sums are added as they come, so the largest
temporary is one level's samples (N * M, Dh, Q, P), not all L levels'. Everything runs in the
value's dtype (under autocast ``grid_sample`` runs in float32), reads no value on the host
(the level shapes are Python ints from the feature maps) and exports to ONNX as GridSample
(opset >= 16).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.models.layers import constant_init, xavier_init
from detcli.registry import ATTENTIONS

SpatialShapes = Sequence[tuple[int, int]]  # (h_l, w_l) of each level, Python ints


def multi_scale_deformable_attn(value: Tensor, spatial_shapes: SpatialShapes,
                                sampling_locations: Tensor,
                                attention_weights: Tensor) -> Tensor:
    """The weighted sum of bilinear samples: value (N, S, M, Dh) (the levels' tokens one after
    the other, row-major), sampling_locations (N, Q, M, L, P, 2) (x, y) in [0, 1],
    attention_weights (N, Q, M, L, P) -> (N, Q, M * Dh). MMCV's
    ``multi_scale_deformable_attn_pytorch``, summed level by level."""
    num, _, heads, head_dims = value.shape
    num_queries = sampling_locations.shape[1]
    grids = (2 * sampling_locations - 1).to(value.dtype)  # grid_sample's [-1, 1]
    per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    out = None
    for level, (tokens, (h, w)) in enumerate(zip(per_level, spatial_shapes)):
        maps = tokens.permute(0, 2, 3, 1).reshape(num * heads, head_dims, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (N * M, Q, P, 2)
        sampled = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (N * M, Dh, Q, P)
        weights = attention_weights[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (N*M, Q, P)
        part = (sampled * weights[:, None].to(sampled.dtype)).sum(-1)  # (N * M, Dh, Q)
        out = part if out is None else out + part
    assert out is not None, "multi_scale_deformable_attn needs at least one level"
    return out.view(num, heads * head_dims, num_queries).transpose(1, 2).contiguous()


def level_sizes(spatial_shapes: SpatialShapes, like: Tensor) -> Tensor:
    """(L, 2) (w_l, h_l) of each level in ``like``'s dtype and device, made without a
    host-to-device copy (each entry a fill)."""
    return torch.stack([torch.stack((like.new_full((), w), like.new_full((), h)))
                        for h, w in spatial_shapes])


class MultiScaleDeformableAttentionConfig(Schema):
    """MMCV's ``MultiScaleDeformableAttention`` settings (``batch_first`` always true in det;
    no ``im2col_step``: nothing is compiled)."""

    type: Literal["MultiScaleDeformableAttention"] = "MultiScaleDeformableAttention"
    embed_dims: int = Field(256, ge=1)
    num_heads: int = Field(8, ge=1)
    num_levels: int = Field(4, ge=1)
    num_points: int = Field(4, ge=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    batch_first: Literal[True] = True
    value_proj_ratio: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self) -> MultiScaleDeformableAttentionConfig:
        value_dims = int(self.embed_dims * self.value_proj_ratio)
        if value_dims % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} must divide the value width "
                             f"{value_dims} (embed_dims {self.embed_dims} x value_proj_ratio "
                             f"{self.value_proj_ratio})")
        return self


@ATTENTIONS.register(MultiScaleDeformableAttentionConfig)
class MultiScaleDeformableAttention(nn.Module):
    """Deformable attention over L feature levels (module docstring); MMCV's parameter names:
    ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``."""

    def __init__(self, *, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4,
                 num_points: int = 4, dropout: float = 0.1, batch_first: Literal[True] = True,
                 value_proj_ratio: float = 1.0) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        value_dims = int(embed_dims * value_proj_ratio)
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, value_dims)
        self.output_proj = nn.Linear(value_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """MMCV's init: the offsets' weights zero and their biases a fixed pattern -- head m
        points along the angle 2 pi m / M (the direction scaled so its larger coordinate is
        1), point p at p + 1 times that, the same on every level -- uniform attention
        (zero weights and biases), Xavier-uniform projections with zero biases."""
        constant_init(self.sampling_offsets, 0.0)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi
                                                                      / self.num_heads)
        grid = torch.stack((thetas.cos(), thetas.sin()), -1)  # (M, 2)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid[:, None, None, :].repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32)[None, None, :,
                                                                                None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())  # (M * L * P * 2,)
        constant_init(self.attention_weights, 0.0)
        xavier_init(self.value_proj, distribution="uniform")
        xavier_init(self.output_proj, distribution="uniform")

    def sampling(self, query: Tensor, reference_points: Tensor,
                 spatial_shapes: SpatialShapes) -> tuple[Tensor, Tensor]:
        """Query with its position (N, Q, D), reference points (N, Q, L, 2) or boxes
        (N, Q, L, 4) -> sampling locations (N, Q, M, L, P, 2) and their softmax weights
        (N, Q, M, L, P). What a picture of the attention draws."""
        num, num_queries, _ = query.shape
        shape = (num, num_queries, self.num_heads, self.num_levels, self.num_points)
        offsets = self.sampling_offsets(query).view(*shape, 2)
        weights = self.attention_weights(query).view(*shape[:3], -1).softmax(-1).view(shape)
        if reference_points.shape[-1] == 2:
            sizes = level_sizes(spatial_shapes, offsets)  # (L, 2) (w, h)
            locations = reference_points[:, :, None, :, None, :] \
                + offsets / sizes[None, None, None, :, None, :]
        elif reference_points.shape[-1] == 4:
            locations = reference_points[:, :, None, :, None, :2] \
                + offsets / self.num_points * reference_points[:, :, None, :, None, 2:] * 0.5
        else:
            raise ValueError("reference_points must end in 2 (x, y) or 4 (cx, cy, w, h) "
                             f"coordinates, got shape {tuple(reference_points.shape)}")
        return locations, weights

    def forward(self, query: Tensor, value: Tensor | None = None, *,
                reference_points: Tensor, spatial_shapes: SpatialShapes,
                query_pos: Tensor | None = None, key_padding_mask: Tensor | None = None,
                identity: Tensor | None = None) -> Tensor:
        """query (N, Q, D), value (N, S, D) (default: the query), reference points
        (N, Q, L, 2 or 4) normalised to each level's map, the L levels' (h, w), the query's
        positions (N, Q, D), key_padding_mask (N, S) bool True on padded tokens -> (N, Q, D)."""
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if len(spatial_shapes) != self.num_levels:
            raise ValueError(f"MultiScaleDeformableAttention has num_levels {self.num_levels}, "
                             f"got {len(spatial_shapes)} levels {list(spatial_shapes)}")
        num, num_values, _ = value.shape
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(num, num_values, self.num_heads, -1)  # (N, S, M, Dh)
        locations, weights = self.sampling(query, reference_points, spatial_shapes)
        out = multi_scale_deformable_attn(value, spatial_shapes, locations, weights)
        return self.dropout(self.output_proj(out)) + identity

    def extra_repr(self) -> str:
        return (f"embed_dims={self.embed_dims}, num_heads={self.num_heads}, "
                f"num_levels={self.num_levels}, num_points={self.num_points}")
