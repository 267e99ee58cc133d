"""DINO's decoder (MMDetection 3.3's ``DinoTransformerDecoder``): Deformable DETR's decoder
layers with positions made from the reference boxes and "look forward twice".

N images, T = D + Q queries (denoising then matching in training, Q at inference), S memory
tokens, L levels, E = ``embed_dims``, J layers.

Per layer j, with reference boxes ``ref`` (N, T, 4) (cx, cy, w, h) in [0, 1] of the valid
image:

1. ``ref`` times each level's valid ratios -> the boxes the deformable cross-attention samples
   in (N, T, L, 4);
2. the query positions: the first level's box through :func:`box_sine_embedding` (2E
   features) and ``ref_point_head`` (Linear(2E, E), ReLU, Linear(E, E): ``layers.0``,
   ``layers.1``);
3. the layer (self-attention under ``self_attn_mask`` -- the denoising mask --, deformable
   cross-attention, FFN);
4. the new box ``sigmoid(reg_branches[j](h) + logit(ref))`` (logit eps 1e-3); the next layer
   starts from it detached.

Outputs: every layer's ``norm(h)`` (J, N, T, E) -- the shared final LayerNorm -- and the
references (J + 1, N, T, 4): the initial one, then each layer's new box *before* the detach.
The head predicts layer j's boxes relative to reference j, so layer j's box loss reaches
layer j - 1's refinement through the undetached box: "look forward twice" (Deformable DETR's
decoder returns the detached boxes instead).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detcli.ops.logits import inverse_sigmoid
from detcli.models.transformer.deformable import SpatialShapes
from detcli.models.transformer.deformable_layers import (
    DeformableDetrTransformerDecoder,
    DeformableDetrTransformerDecoderConfig,
)

REFINE_EPS = 1e-3  # MMDetection's inverse_sigmoid eps in DINO's box refinement


def box_sine_embedding(boxes: Tensor, num_feats: int, temperature: float = 10000) -> Tensor:
    """Boxes (..., 4) (cx, cy, w, h) in [0, 1] -> (..., 4 * num_feats): each coordinate times
    2 pi over ``temperature ** (2 * (i // 2) / num_feats)``, sine on even and cosine on odd
    features, in the order (cy, cx, w, h) (MMDetection's ``coordinate_to_encoding``; its
    ``num_feats`` 128 is embed_dims / 2 at 256, the rule used here at every width)."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)
    coords = torch.cat((boxes[..., 1:2], boxes[..., 0:1], boxes[..., 2:]), -1) * (2 * math.pi)
    pos = coords[..., None] / dim_t  # (..., 4, F)
    embed = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1)  # (..., 4, F/2, 2)
    return embed.flatten(-3)


class RefPointHead(nn.Module):
    """MMDetection's two-layer ``MLP`` (``layers.0``, ReLU, ``layers.1``)."""

    def __init__(self, in_dims: int, embed_dims: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(in_dims, embed_dims),
                                     nn.Linear(embed_dims, embed_dims)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[1](torch.relu(self.layers[0](x)))


class DinoTransformerDecoder(DeformableDetrTransformerDecoder):
    """Deformable DETR's decoder layers (``layers.j``), ``ref_point_head`` and ``norm``
    (module docstring)."""

    def __init__(self, cfg: DeformableDetrTransformerDecoderConfig) -> None:
        super().__init__(cfg)
        self.ref_point_head = RefPointHead(self.embed_dims * 2, self.embed_dims)
        self.norm = nn.LayerNorm(self.embed_dims)

    def forward(self, query: Tensor, memory: Tensor, memory_padding_mask: Tensor | None,
                reference_points: Tensor, spatial_shapes: SpatialShapes, valid_ratios: Tensor,
                reg_branches: nn.ModuleList,
                self_attn_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Queries (N, T, E), the memory (N, S, E) and its padding (N, S), initial reference
        boxes (N, T, 4), valid ratios (N, L, 2), the head's ``reg_branches``, the (T, T)
        denoising mask -> hidden states (J, N, T, E) and references (J + 1, N, T, 4)."""
        ratios = torch.cat((valid_ratios, valid_ratios), -1)[:, None]  # (N, 1, L, 4)
        states, references = [], [reference_points]
        for index, layer in enumerate(self.layers):
            per_level = reference_points[:, :, None] * ratios.to(reference_points)  # (N,T,L,4)
            query_pos = self.ref_point_head(
                box_sine_embedding(per_level[:, :, 0], self.embed_dims // 2).to(query.dtype))
            query = layer(query, query_pos, memory, memory_padding_mask, per_level,
                          spatial_shapes, self_attn_mask=self_attn_mask)
            moved = (reg_branches[index](query)
                     + inverse_sigmoid(reference_points, REFINE_EPS)).sigmoid()
            states.append(self.norm(query))
            references.append(moved)  # undetached: look forward twice
            reference_points = moved.detach()
        return torch.stack(states), torch.stack(references)
