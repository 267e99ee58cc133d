"""Positional encodings of a feature map for a transformer, MMDetection 3.3 semantics.

N images, h x w the feature map, F = ``num_feats`` features per axis, C = 2F channels out.

Both encodings read a padding mask (N, h, w) bool, True on padded positions (see
:mod:`detcli.models.transformer.masks`), and return (N, C, h, w): the first F channels encode
the row (y), the last F the column (x).

- :class:`SinePositionalEncoding` (DETR): the position of a pixel is its 1-based count of
  valid pixels along each axis (the cumulative sum of the mask's complement), optionally
  normalised to ``(pos + offset) / (last valid pos + eps) * scale`` (``normalize``: the
  image's valid extent maps to [0, scale]); feature ``2i`` and ``2i + 1`` are ``sin`` and
  ``cos`` of ``pos / temperature ** (2i / F)``.
- :class:`LearnedPositionalEncoding`: a learned vector per row and per column
  (``row_embed``, ``col_embed``), independent of the mask except for its size. Note the
  order MMDetection uses here: the column (x) embedding first, then the row's.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.registry import POSITIONAL_ENCODINGS


class PositionalEncodingSchema(Schema):
    """A positional encoding's config, which knows its output channels (2 ``num_feats``): a
    transformer config checks them against its embedding width."""

    type: str
    num_feats: int

    def out_channels(self) -> int:
        return 2 * self.num_feats


class SinePositionalEncodingConfig(PositionalEncodingSchema):
    type: Literal["SinePositionalEncoding"] = "SinePositionalEncoding"
    num_feats: int = Field(128, ge=2)
    temperature: float = Field(10000, gt=0)
    normalize: bool = False
    scale: float = 2 * math.pi
    eps: float = Field(1e-6, gt=0)
    offset: float = 0.0


@POSITIONAL_ENCODINGS.register(SinePositionalEncodingConfig)
class SinePositionalEncoding(nn.Module):
    """Fixed sine/cosine encoding of each valid pixel's position (module docstring)."""

    def __init__(self, *, num_feats: int = 128, temperature: float = 10000,
                 normalize: bool = False, scale: float = 2 * math.pi, eps: float = 1e-6,
                 offset: float = 0.0) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def forward(self, mask: Tensor) -> Tensor:
        """Padding mask (N, h, w) bool (True: padded) -> (N, 2F, h, w)."""
        valid = (~mask).to(torch.float32)  # (N, h, w)
        y_embed = valid.cumsum(1)  # (N, h, w): 1-based row among the valid ones
        x_embed = valid.cumsum(2)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.num_feats, dtype=torch.float32, device=mask.device)  # (F,)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor")
                                     / self.num_feats)
        return torch.cat((self._interleave(y_embed, dim_t), self._interleave(x_embed, dim_t)),
                         dim=3).permute(0, 3, 1, 2)

    @staticmethod
    def _interleave(embed: Tensor, dim_t: Tensor) -> Tensor:
        """(N, h, w) positions -> (N, h, w, F): sin on even features, cos on odd ones."""
        pos = embed[..., None] / dim_t  # (N, h, w, F)
        stacked = torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=4)
        return stacked.flatten(3)

    def extra_repr(self) -> str:
        return (f"num_feats={self.num_feats}, temperature={self.temperature}, "
                f"normalize={self.normalize}, scale={self.scale}, offset={self.offset}")


class LearnedPositionalEncodingConfig(PositionalEncodingSchema):
    type: Literal["LearnedPositionalEncoding"] = "LearnedPositionalEncoding"
    num_feats: int = Field(128, ge=1)
    row_num_embed: int = Field(50, ge=1)
    col_num_embed: int = Field(50, ge=1)


@POSITIONAL_ENCODINGS.register(LearnedPositionalEncodingConfig)
class LearnedPositionalEncoding(nn.Module):
    """A learned embedding per row and per column (module docstring); maps larger than
    ``row_num_embed`` x ``col_num_embed`` cannot be encoded."""

    def __init__(self, *, num_feats: int = 128, row_num_embed: int = 50,
                 col_num_embed: int = 50) -> None:
        super().__init__()
        self.num_feats = num_feats
        self.row_embed = nn.Embedding(row_num_embed, num_feats)
        self.col_embed = nn.Embedding(col_num_embed, num_feats)
        self.init_weights()

    def init_weights(self) -> None:
        """MMDetection's ``Uniform`` init of the embeddings: U(0, 1)."""
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: Tensor) -> Tensor:
        """Padding mask (N, h, w) -> (N, 2F, h, w): column embedding, then row embedding."""
        num, h, w = mask.shape
        x_embed = self.col_embed(torch.arange(w, device=mask.device))  # (w, F)
        y_embed = self.row_embed(torch.arange(h, device=mask.device))  # (h, F)
        pos = torch.cat((x_embed[None, :, :].expand(h, w, -1),
                         y_embed[:, None, :].expand(h, w, -1)), dim=-1)  # (h, w, 2F)
        return pos.permute(2, 0, 1)[None].expand(num, -1, -1, -1)
