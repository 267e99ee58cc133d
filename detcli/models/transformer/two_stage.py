"""Two-stage Deformable DETR: every encoder token proposes a box, the best become the queries
(MMDetection 3.3's ``gen_encoder_output_proposals`` and ``get_proposal_pos_embed``).

N images, L levels (h_l, w_l), S tokens, Q queries, F = ``num_pos_feats``.

:func:`encoder_proposals`: token (i, j) of level l proposes the box centred on its pixel,
``((j + 0.5) / valid_w, (i + 0.5) / valid_h)`` of the image's valid part on that level, of
width and height ``0.05 * 2 ** l``. A proposal is valid when all four coordinates lie in
(0.01, 0.99); it is returned in logit space (``log(p / (1 - p))``), +inf on padded tokens and
on invalid proposals, and those tokens' memory is zeroed (so they never carry a box).

:func:`proposal_pos_embed`: a box in logit space -> sigmoid -> times 2 pi -> each of its four
coordinates encoded by F sines and cosines (``temperature ** (2 * (i // 2) / F)``, sine on
even features, cosine on odd), concatenated (N, Q, 4F). MMDetection fixes F = 128, which
fits only embed_dims 256 (4F = 2 * embed_dims); det uses F = embed_dims / 2, the same there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from detcli.models.transformer.deformable import SpatialShapes

PROPOSAL_MIN, PROPOSAL_MAX = 0.01, 0.99


def encoder_proposals(memory: Tensor, padding_mask: Tensor | None,
                      spatial_shapes: SpatialShapes) -> tuple[Tensor, Tensor]:
    """Memory (N, S, D), padding (N, S) (None: none) -> the memory with padded and invalid
    tokens zeroed (N, S, D) and every token's proposal (N, S, 4) (cx, cy, w, h) in logit
    space, +inf where invalid (module docstring)."""
    num = memory.shape[0]
    proposals, start = [], 0
    for level, (h, w) in enumerate(spatial_shapes):
        if padding_mask is None:
            valid_wh = torch.stack((memory.new_full((num,), w), memory.new_full((num,), h)), -1)
        else:
            level_mask = padding_mask[:, start:start + h * w].view(num, h, w)
            valid_wh = torch.stack(((~level_mask[:, 0, :]).sum(1),
                                    (~level_mask[:, :, 0]).sum(1)), -1).to(memory.dtype)
        ys = torch.linspace(0, h - 1, h, dtype=torch.float32, device=memory.device)
        xs = torch.linspace(0, w - 1, w, dtype=torch.float32, device=memory.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # (h, w)
        grid = torch.stack((grid_x, grid_y), -1).flatten(0, 1)  # (hw, 2) (x, y)
        centres = (grid[None] + 0.5) / valid_wh[:, None, :].float()  # (N, hw, 2)
        sizes = torch.full_like(centres, 0.05 * 2.0 ** level)
        proposals.append(torch.cat((centres, sizes), -1))  # (N, hw, 4)
        start += h * w
    boxes = torch.cat(proposals, 1)  # (N, S, 4) float32
    valid = ((boxes > PROPOSAL_MIN) & (boxes < PROPOSAL_MAX)).all(-1, keepdim=True)  # (N, S, 1)
    logits = torch.log(boxes / (1 - boxes))
    keep = valid if padding_mask is None else valid & ~padding_mask[..., None]
    logits = logits.masked_fill(~keep, float("inf"))
    return memory.masked_fill(~keep, 0.0), logits.to(memory.dtype)


def proposal_pos_embed(proposals: Tensor, num_pos_feats: int = 128,
                       temperature: float = 10000) -> Tensor:
    """Boxes (N, Q, 4) in logit space -> (N, Q, 4 * num_pos_feats) (module docstring)."""
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=proposals.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos = proposals.float().sigmoid()[..., None] * (2 * math.pi) / dim_t  # (N, Q, 4, F)
    embed = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4).flatten(2)
    return embed.to(proposals.dtype)
