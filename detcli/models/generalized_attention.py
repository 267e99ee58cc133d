"""MMCV's ``GeneralizedAttention`` plugin (Zhu et al. 2019, "An Empirical Study of Spatial
Attention Mechanisms in Deep Networks"): attention over a feature map from four chosen terms.

N images, C channels, M ``num_heads``, d = C // M channels per head (query, key and value),
h x w the query map (the input subsampled by ``q_stride``), h' x w' the key/value map (by
``kv_stride``), P = h w and P' = h' w' positions, D ``position_embedding_dim`` (C when -1).

The energy of query position (i, j) against key position (a, b) in head m is the sum of the
terms ``attention_type`` switches on, one character each, in this order:

1. ``q . k``: query content against key content (``query_conv``, ``key_conv``);
2. ``q . r``: query content against the relative position, r = ``fc_x(e(j - b)) / sqrt 2 +
   fc_y(e(i - a)) / sqrt 2``, e a sine/cosine embedding of the coordinate difference (in input
   pixels, times ``position_magnitude``) with wavelengths ``1000 ** (4 t / D)``, t < D / 4,
   its D / 2 channels the sines then the cosines, ``fc_x`` / ``fc_y`` being
   ``appr_geom_fc_x`` / ``appr_geom_fc_y`` (D / 2 -> M d, no bias);
3. ``u . k``: a learnt per-head vector ``appr_bias`` against key content (saliency);
4. ``v . r``: a learnt ``geom_bias`` against the relative position.

(1 and 3 share one product ``(q + u) . k``, 2 and 4 ``(q + v) . r``.) The attention is the
softmax over the P' keys; the heads' weighted values (``value_conv``) go through ``proj_conv``
(M d -> C, with bias), are upsampled bilinearly to the input's size when ``q_stride > 1``, and
``out = x + gamma * that``. Subsampling is MMCV's ``AvgPool2d(kernel_size=1, stride=s)``:
every s-th row and column. Parameter names are MMCV's, so MMDetection checkpoints load as is.

Init (MMCV's): the five projections Kaiming uniform (fan_in, leaky ReLU with a = 1), zero
``proj_conv`` bias, ``appr_bias`` and ``geom_bias`` uniform in +-1/sqrt(2 d), ``gamma = 0``
(a new block is the identity). Inside a ResNet the backbone's init then re-initialises the
four convs as every other conv (MMDetection's ResNet init reaches them too).

``spatial_range >= 0`` (MMCV's local window, a constant table defined only for 256 or 512
input channels and used by no MMDetection config) is refused; -1, no window, is MMDetection's.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.errors import ConfigError
from detcli.models.layers import kaiming_init

WAVE_LENGTH = 1000.0


class GeneralizedAttentionConfig(Schema):
    """MMCV's ``GeneralizedAttention`` (its ``in_channels`` is the conv's it follows)."""

    type: Literal["GeneralizedAttention"] = "GeneralizedAttention"
    spatial_range: int = -1
    num_heads: int = Field(9, ge=1)
    position_embedding_dim: int = -1  # -1: the input's channels
    position_magnitude: float = Field(1, gt=0)
    kv_stride: int = Field(2, ge=1)
    q_stride: int = Field(1, ge=1)
    # four 0/1 characters: query-key, query-position, saliency, position bias
    attention_type: str = Field("1111", pattern="^[01]{4}$")
    postfix: int | str = ""

    @field_validator("spatial_range")
    @classmethod
    def _no_window(cls, value: int) -> int:
        if value != -1:
            raise ValueError(f"spatial_range {value}: only -1 (no local window) is supported; "
                             "MMCV's window is a fixed table for 256/512 channels that no "
                             "MMDetection config uses")
        return value

    @field_validator("attention_type")
    @classmethod
    def _some_term(cls, value: str) -> str:
        if value == "0000":
            raise ValueError("attention_type '0000' switches every term off; set at least one "
                             "of the four characters to 1")
        return value

    @field_validator("position_embedding_dim")
    @classmethod
    def _embedding_dim(cls, value: int) -> int:
        if value != -1 and (value < 4 or value % 4):
            raise ValueError(f"position_embedding_dim {value} must be -1 (the input's channels) "
                             "or a positive multiple of 4")
        return value


def relative_position_embedding(num_q: int, num_kv: int, q_stride: int, kv_stride: int,
                                magnitude: float, dim: int) -> Tensor:
    """(num_q, num_kv, dim / 2) float32: sines then cosines of the coordinate difference
    ``(q q_stride - k kv_stride) * magnitude`` over the wavelengths ``1000 ** (4 t / dim)``."""
    diff = (torch.arange(num_q, dtype=torch.float32)[:, None] * q_stride
            - torch.arange(num_kv, dtype=torch.float32)[None, :] * kv_stride) * magnitude
    wavelengths = WAVE_LENGTH ** (torch.arange(dim // 4, dtype=torch.float32) * (4.0 / dim))
    phase = diff[..., None] / wavelengths  # (num_q, num_kv, dim / 4)
    return torch.cat((phase.sin(), phase.cos()), dim=-1)


class GeneralizedAttention(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): the input plus ``gamma`` times the attended values."""

    abbr = "gen_attention_block"

    def __init__(self, in_channels: int, *, spatial_range: int = -1, num_heads: int = 9,
                 position_embedding_dim: int = -1, position_magnitude: float = 1,
                 kv_stride: int = 2, q_stride: int = 1, attention_type: str = "1111") -> None:
        super().__init__()
        if spatial_range != -1:
            raise ConfigError(f"GeneralizedAttention: spatial_range {spatial_range} is not "
                              "supported; use -1")
        head_dim = in_channels // num_heads
        if head_dim < 1:
            raise ConfigError(f"GeneralizedAttention: num_heads {num_heads} exceeds the "
                              f"{in_channels} input channels; use at most {in_channels} heads")
        embed_dim = position_embedding_dim if position_embedding_dim > 0 else in_channels
        self.uses = tuple(c == "1" for c in attention_type)  # the four terms, in order
        if (self.uses[1] or self.uses[3]) and embed_dim % 4:
            raise ConfigError(f"GeneralizedAttention: position_embedding_dim {embed_dim} (the "
                              f"{in_channels} input channels when -1) must be a multiple of 4")
        self.in_channels = in_channels
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.position_embedding_dim = embed_dim
        self.position_magnitude = position_magnitude
        self.kv_stride = kv_stride
        self.q_stride = q_stride
        inner = head_dim * num_heads
        self.projections: list[nn.Module] = []
        if self.uses[0] or self.uses[1]:
            self.query_conv = self._projection(nn.Conv2d(in_channels, inner, 1, bias=False))
        if self.uses[0] or self.uses[2]:
            self.key_conv = self._projection(nn.Conv2d(in_channels, inner, 1, bias=False))
        self.value_conv = self._projection(nn.Conv2d(in_channels, inner, 1, bias=False))
        if self.uses[1] or self.uses[3]:
            self.appr_geom_fc_x = self._projection(nn.Linear(embed_dim // 2, inner, bias=False))
            self.appr_geom_fc_y = self._projection(nn.Linear(embed_dim // 2, inner, bias=False))
        if self.uses[2]:
            self.appr_bias = nn.Parameter(torch.empty(inner))
        if self.uses[3]:
            self.geom_bias = nn.Parameter(torch.empty(inner))
        self.proj_conv = self._projection(nn.Conv2d(inner, in_channels, 1, bias=True))
        self.gamma = nn.Parameter(torch.zeros(1))
        self.reset_parameters()

    def _projection(self, layer: nn.Module) -> nn.Module:
        self.projections.append(layer)
        return layer

    def reset_parameters(self) -> None:
        for layer in self.projections:
            kaiming_init(layer, a=1, mode="fan_in", nonlinearity="leaky_relu",
                         distribution="uniform")
        bound = 1.0 / math.sqrt(2 * self.head_dim)
        if self.uses[2]:
            nn.init.uniform_(self.appr_bias, -bound, bound)
        if self.uses[3]:
            nn.init.uniform_(self.geom_bias, -bound, bound)
        nn.init.zeros_(self.gamma)

    def heads(self, x: Tensor) -> Tensor:
        """(N, M d, h, w) -> (N, M, h w, d)."""
        n = x.shape[0]
        return x.reshape(n, self.num_heads, self.head_dim, -1).transpose(2, 3)

    def position_features(self, h: int, w: int, h_kv: int, w_kv: int,
                          x: Tensor) -> tuple[Tensor, Tensor]:
        """The relative-position features along x (M, w, w', d) and y (M, h, h', d)."""
        features = []
        for fc, num_q, num_kv in ((self.appr_geom_fc_x, w, w_kv), (self.appr_geom_fc_y, h, h_kv)):
            embedding = relative_position_embedding(
                num_q, num_kv, self.q_stride, self.kv_stride, self.position_magnitude,
                self.position_embedding_dim).to(device=x.device, dtype=x.dtype)
            feat = fc(embedding) / math.sqrt(2)  # (num_q, num_kv, M d)
            features.append(feat.reshape(num_q, num_kv, self.num_heads, self.head_dim)
                            .permute(2, 0, 1, 3))
        return features[0], features[1]

    def energy(self, x_q: Tensor, x_kv: Tensor) -> Tensor:
        """(N, M, P, P') attention logits: the sum of the terms ``attention_type`` selects."""
        n, _, h, w = x_q.shape
        h_kv, w_kv = x_kv.shape[-2:]
        num_heads, head_dim = self.num_heads, self.head_dim
        query = self.heads(self.query_conv(x_q)) if self.uses[0] or self.uses[1] else None
        total = x_q.new_zeros(())
        if self.uses[0] or self.uses[2]:
            key = self.heads(self.key_conv(x_kv)).transpose(2, 3)  # (N, M, d, P')
            content = query if self.uses[0] else 0.0
            if self.uses[2]:
                content = content + self.appr_bias.view(1, num_heads, 1, head_dim)
            total = total + torch.matmul(content, key)  # (N, M, P or 1, P')
        if self.uses[1] or self.uses[3]:
            feat_x, feat_y = self.position_features(h, w, h_kv, w_kv, x_q)
            geometry = query if self.uses[1] else 0.0
            if self.uses[3]:
                geometry = geometry + self.geom_bias.view(1, num_heads, 1, head_dim)
            geometry = geometry.expand(n, num_heads, h * w, head_dim)
            geometry = geometry.reshape(n, num_heads, h, w, head_dim)
            energy_x = torch.einsum("nmijd,mjbd->nmijb", geometry, feat_x)  # (N, M, h, w, w')
            energy_y = torch.einsum("nmijd,miad->nmija", geometry, feat_y)  # (N, M, h, w, h')
            position = energy_y[..., :, None] + energy_x[..., None, :]  # (N, M, h, w, h', w')
            total = total + position.reshape(n, num_heads, h * w, h_kv * w_kv)
        return total.expand(n, num_heads, h * w, h_kv * w_kv)

    def forward(self, x: Tensor) -> Tensor:
        x_q = x[:, :, ::self.q_stride, ::self.q_stride]  # (N, C, h, w)
        x_kv = x[:, :, ::self.kv_stride, ::self.kv_stride]  # (N, C, h', w')
        n, _, h, w = x_q.shape
        attention = F.softmax(self.energy(x_q, x_kv), dim=3)  # (N, M, P, P')
        value = self.heads(self.value_conv(x_kv))  # (N, M, P', d)
        out = torch.matmul(attention.to(value.dtype), value)  # (N, M, P, d)
        out = out.transpose(2, 3).reshape(n, self.num_heads * self.head_dim, h, w)
        out = self.proj_conv(out)  # (N, C, h, w)
        if self.q_stride > 1:
            out = F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)
        return x + self.gamma * out

    @classmethod
    def from_config(cls, cfg: GeneralizedAttentionConfig, in_channels: int) -> GeneralizedAttention:
        return cls(in_channels, **cfg.model_dump(exclude={"type", "postfix"}))
