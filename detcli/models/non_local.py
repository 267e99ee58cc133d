"""MMCV's ``NonLocal2d`` plugin (Wang et al. 2018, "Non-local Neural Networks").

N images, C channels, C' = max(C // ``reduction``, 1), H x W map (P = H W positions), P' the
key positions (P, or P / 4 with ``sub_sample``: a 2x2 max pool on ``g`` and ``phi``).

``out = x + conv_out(f @ g(x))``: every position gathers ``g``'s C'-channel features of all
positions, weighted by the pairwise (P, P') matrix ``f`` of ``mode``, with
``theta(x)`` (queries, (P, C')) and ``phi(x)`` (keys, (C', P')):

- ``embedded_gaussian``: ``softmax(theta phi / sqrt(C'))`` over the keys (no ``/ sqrt(C')``
  without ``use_scale``);
- ``gaussian``: ``softmax(x^T x)`` on the input itself (no ``theta`` / ``phi``);
- ``dot_product``: ``theta phi / P'``;
- ``concatenation``: ``relu(w . [theta_p, phi_q]) / P'`` for each pair, ``w`` being
  ``concat_project`` (a 1x1 conv 2 C' -> 1 without bias).

``g``, ``theta``, ``phi`` and ``conv_out`` are 1x1 ConvModules (``g.conv.weight``, ...; with
``sub_sample`` ``g.0.conv.weight``); ``norm_cfg`` puts a norm after ``conv_out``'s conv.
Init (MMCV's): ``g`` / ``theta`` / ``phi`` N(0, 0.01) with zero bias, ``conv_out`` zero (its
norm zero when it has one), so a new block is the identity; ``concat_project`` Kaiming.
Inside a ResNet the backbone's init then re-initialises every conv (MMDetection's too).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.models.layers import ConvModule, NormConfig, constant_init, normal_init

Mode = Literal["embedded_gaussian", "gaussian", "dot_product", "concatenation"]


class NonLocal2dConfig(Schema):
    """MMCV's ``NonLocal2d`` (its ``in_channels`` is the conv's it follows)."""

    type: Literal["NonLocal2d"] = "NonLocal2d"
    reduction: int = Field(2, ge=1)
    use_scale: bool = True
    mode: Mode = "embedded_gaussian"
    sub_sample: bool = False
    norm_cfg: Maybe[NormConfig] = None
    postfix: int | str = ""


def _pointwise(in_channels: int, out_channels: int, sub_sample: bool) -> nn.Module:
    """A 1x1 ConvModule without activation, then a 2x2 max pool with ``sub_sample``."""
    conv = ConvModule(in_channels, out_channels, 1, activation=None)
    return nn.Sequential(conv, nn.MaxPool2d(2)) if sub_sample else conv


class NonLocal2d(nn.Module):
    """(N, C, H, W) -> (N, C, H, W): the input plus the non-local response."""

    abbr = "nonlocal_block"

    def __init__(self, in_channels: int, *, reduction: int = 2, use_scale: bool = True,
                 mode: Mode = "embedded_gaussian", sub_sample: bool = False,
                 norm_cfg: NormConfig | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // reduction, 1)
        self.use_scale = use_scale
        self.mode = mode
        inter = self.inter_channels
        self.g = _pointwise(in_channels, inter, sub_sample)
        self.conv_out = ConvModule(inter, in_channels, 1, norm_cfg=norm_cfg, activation=None)
        if mode != "gaussian":
            self.theta = ConvModule(in_channels, inter, 1, activation=None)
            self.phi = _pointwise(in_channels, inter, sub_sample)
        elif sub_sample:
            self.phi = nn.MaxPool2d(2)
        else:
            self.phi = nn.Identity()
        if mode == "concatenation":
            self.concat_project = ConvModule(2 * inter, 1, 1, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.g, self.theta, self.phi) if self.mode != "gaussian" else (self.g,):
            conv = module[0] if isinstance(module, nn.Sequential) else module
            normal_init(conv.conv, std=0.01)
        last = self.conv_out.norm if self.conv_out.norm is not None else self.conv_out.conv
        constant_init(last, 0.0)

    def pairwise(self, theta_x: Tensor, phi_x: Tensor) -> Tensor:
        """(N, P, C') queries and (N, C', P') keys -> the (N, P, P') weights of ``mode``."""
        p, p_kv = theta_x.shape[1], phi_x.shape[2]
        if self.mode == "concatenation":
            queries = theta_x.transpose(1, 2)[..., None].expand(-1, -1, -1, p_kv)  # (N, C', P, P')
            keys = phi_x[:, :, None, :].expand(-1, -1, p, -1)  # (N, C', P, P')
            return self.concat_project(torch.cat((queries, keys), dim=1))[:, 0] / p_kv
        weights = torch.matmul(theta_x, phi_x)  # (N, P, P')
        if self.mode == "dot_product":
            return weights / p_kv
        if self.mode == "embedded_gaussian" and self.use_scale:
            weights = weights / theta_x.shape[-1] ** 0.5
        return weights.softmax(dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)  # (N, P', C')
        queries = x if self.mode == "gaussian" else self.theta(x)
        theta_x = queries.flatten(2).transpose(1, 2)  # (N, P, C' or C)
        phi_x = self.phi(x).flatten(2)  # (N, C' or C, P')
        y = torch.matmul(self.pairwise(theta_x, phi_x).to(g_x.dtype), g_x)  # (N, P, C')
        y = y.transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return x + self.conv_out(y)

    @classmethod
    def from_config(cls, cfg: NonLocal2dConfig, in_channels: int) -> NonLocal2d:
        return cls(in_channels, **cfg.model_dump(exclude={"type", "postfix", "norm_cfg"}),
                   norm_cfg=cfg.norm_cfg)
