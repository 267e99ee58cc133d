"""Building blocks shared by backbones, necks and heads: norm layers, ``ConvModule``, weight init.

N images, C channels, H x W feature map.

Names follow MMCV so that state dicts read like MMDetection's: a norm layer is called ``bn``
(BatchNorm, SyncBatchNorm) or ``gn`` (GroupNorm), optionally with a numeric postfix (``bn1``),
and a :class:`ConvModule` holds ``conv``, then its norm, then ``activate``. Initialisers match
MMCV's defaults (Kaiming normal with ``fan_out`` for convs, constant 1/0 for norms).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError

NORM_LAYERS: dict[str, tuple[str, type[nn.Module]]] = {
    "BN": ("bn", nn.BatchNorm2d),
    "SyncBN": ("bn", nn.SyncBatchNorm),
    "GN": ("gn", nn.GroupNorm),
}
ACTIVATIONS = ("ReLU", "LeakyReLU", "SiLU", "Swish", "ReLU6")  # Swish: MMCV's name for SiLU


class NormConfig(Schema):
    """A normalisation layer. ``requires_grad = false`` freezes its affine parameters."""

    type: Literal["BN", "SyncBN", "GN"] = "BN"
    requires_grad: bool = True
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)  # BN running-average momentum; unused by GN
    num_groups: Maybe[int] = Field(None, ge=1)  # GN only, and required there

    @model_validator(mode="after")
    def _groups_match_type(self) -> NormConfig:
        if self.type == "GN" and self.num_groups is None:
            raise ValueError("norm type 'GN' needs num_groups (e.g. num_groups = 32)")
        if self.type != "GN" and self.num_groups is not None:
            raise ValueError(f"num_groups is only valid for type 'GN', not {self.type!r}")
        return self


class ActConfig(Schema):
    """An activation layer (MMCV's ``act_cfg``): ``SiLU`` (= ``Swish``), ``ReLU``, ``LeakyReLU``."""

    type: Literal["ReLU", "LeakyReLU", "SiLU", "Swish", "ReLU6"] = "ReLU"
    inplace: bool = True


def silu_act() -> ActConfig:
    """``act_cfg = {type = "SiLU"}``: CSPNeXt's and RTMDet's activation."""
    return ActConfig(type="SiLU")


def bn_momentum_003() -> NormConfig:
    """``BN`` with momentum 0.03 and eps 0.001: the default norm of MMDetection's CSPNeXt,
    CSPNeXtPAFPN and RTMDetSepBNHead classes (the RTMDet configs replace it with SyncBN's
    defaults, momentum 0.1 and eps 1e-5)."""
    return NormConfig(type="BN", momentum=0.03, eps=0.001)


def build_norm(cfg: NormConfig, num_features: int, postfix: int | str = "") -> tuple[str, nn.Module]:
    """The attribute name MMCV gives this norm (``bn``, ``gn``, plus ``postfix``) and the layer."""
    abbr, layer_cls = NORM_LAYERS[cfg.type]
    if cfg.type == "GN":
        assert cfg.num_groups is not None  # guaranteed by NormConfig
        if num_features % cfg.num_groups:
            raise ConfigError(
                f"GN num_groups={cfg.num_groups} does not divide {num_features} channels; "
                f"use a divisor of {num_features}"
            )
        layer: nn.Module = nn.GroupNorm(cfg.num_groups, num_features, eps=cfg.eps)
    else:
        layer = layer_cls(num_features, eps=cfg.eps, momentum=cfg.momentum)
    for param in layer.parameters():
        param.requires_grad = cfg.requires_grad
    return f"{abbr}{postfix}", layer


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a norm layer :func:`build_norm` can make."""
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm))


def build_activation(name: str, inplace: bool = True) -> nn.Module:
    if name == "ReLU":
        return nn.ReLU(inplace=inplace)
    if name == "LeakyReLU":
        return nn.LeakyReLU(negative_slope=0.01, inplace=inplace)
    if name in ("SiLU", "Swish"):  # x * sigmoid(x) (CSPNeXt, RTMDet)
        return nn.SiLU(inplace=inplace)
    if name == "ReLU6":  # min(max(x, 0), 6) (MobileNetV2)
        return nn.ReLU6(inplace=inplace)
    raise ConfigError(f"unknown activation {name!r}; supported: {', '.join(ACTIVATIONS)}")


class ConvModule(nn.Module):
    """conv -> optional norm -> optional activation, with MMCV's submodule names.

    ``bias="auto"`` gives the conv a bias only when there is no norm after it. Weights start
    as MMCV's: Kaiming normal (``fan_out``) for the conv, weight 1 and bias 0 for the norm.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool | Literal["auto"] = "auto",
        norm_cfg: NormConfig | None = None,
        activation: str | None = "ReLU",
        inplace: bool = True,
    ) -> None:
        super().__init__()
        self.with_norm = norm_cfg is not None
        self.activation = activation
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=groups,
            bias=(not self.with_norm) if bias == "auto" else bias,
        )
        self.norm_name: str | None = None
        if norm_cfg is not None:
            self.norm_name, norm = build_norm(norm_cfg, out_channels)
            self.add_module(self.norm_name, norm)
        if activation is not None:
            self.activate = build_activation(activation, inplace=inplace)
        self.init_weights()

    @property
    def norm(self) -> nn.Module | None:
        return getattr(self, self.norm_name) if self.norm_name else None

    def init_weights(self) -> None:
        if self.activation == "LeakyReLU":
            kaiming_init(self.conv, a=0.01, nonlinearity="leaky_relu")
        else:
            kaiming_init(self.conv)
        if self.norm is not None:
            constant_init(self.norm, 1.0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)  # (N, C_out, H', W')
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activate(x)
        return x


class DepthwiseSeparableConvModule(nn.Module):
    """MMCV's ``DepthwiseSeparableConvModule``: a k x k depthwise ConvModule (one filter per
    input channel, ``groups = in_channels``) then a 1 x 1 pointwise ConvModule, each with its
    own norm and activation. (N, C_in, H, W) -> (N, C_out, H', W'); submodules
    ``depthwise_conv`` and ``pointwise_conv`` (MMCV's names, so checkpoints load).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        norm_cfg: NormConfig | None = None,
        activation: str | None = "ReLU",
        inplace: bool = True,
    ) -> None:
        super().__init__()
        self.depthwise_conv = ConvModule(
            in_channels, in_channels, kernel_size, stride=stride, padding=padding,
            dilation=dilation, groups=in_channels, norm_cfg=norm_cfg, activation=activation,
            inplace=inplace)
        self.pointwise_conv = ConvModule(in_channels, out_channels, 1, norm_cfg=norm_cfg,
                                         activation=activation, inplace=inplace)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


def conv_module(depthwise: bool, in_channels: int, out_channels: int, kernel_size: int, *,
                stride: int = 1, padding: int = 0, norm_cfg: NormConfig | None = None,
                activation: str | None = "ReLU") -> nn.Module:
    """A :class:`DepthwiseSeparableConvModule` when ``depthwise`` (MMDetection's
    ``use_depthwise``), else a :class:`ConvModule`; same arguments."""
    kind = DepthwiseSeparableConvModule if depthwise else ConvModule
    return kind(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                norm_cfg=norm_cfg, activation=activation)


class Scale(nn.Module):
    """A learnable scalar (MMCV's ``Scale``, parameter ``scale``): ``forward(x) = x * scale``.

    FCOS and ATSS give each FPN level one, so levels sharing a regression conv can still
    predict distances of different magnitudes.
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


# ---- initialisers (MMCV's defaults) ---------------------------------------------------------

def _init_bias(module: nn.Module, bias: float) -> None:
    if getattr(module, "bias", None) is not None:
        nn.init.constant_(module.bias, bias)


def kaiming_init(
    module: nn.Module,
    a: float = 0.0,
    mode: Literal["fan_in", "fan_out"] = "fan_out",
    nonlinearity: str = "relu",
    bias: float = 0.0,
    distribution: Literal["normal", "uniform"] = "normal",
) -> None:
    if distribution == "uniform":
        nn.init.kaiming_uniform_(module.weight, a=a, mode=mode, nonlinearity=nonlinearity)
    else:
        nn.init.kaiming_normal_(module.weight, a=a, mode=mode, nonlinearity=nonlinearity)
    _init_bias(module, bias)


def xavier_init(
    module: nn.Module, gain: float = 1.0, bias: float = 0.0,
    distribution: Literal["normal", "uniform"] = "normal",
) -> None:
    if distribution == "uniform":
        nn.init.xavier_uniform_(module.weight, gain=gain)
    else:
        nn.init.xavier_normal_(module.weight, gain=gain)
    _init_bias(module, bias)


def normal_init(module: nn.Module, mean: float = 0.0, std: float = 1.0, bias: float = 0.0) -> None:
    nn.init.normal_(module.weight, mean, std)
    _init_bias(module, bias)


def constant_init(module: nn.Module, val: float, bias: float = 0.0) -> None:
    if getattr(module, "weight", None) is not None:
        nn.init.constant_(module.weight, val)
    _init_bias(module, bias)


def bias_init_with_prob(prior_prob: float) -> float:
    """The bias that makes ``sigmoid(bias) == prior_prob`` (RetinaNet's classifier prior)."""
    if not 0.0 < prior_prob < 1.0:
        raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
    return -math.log((1.0 - prior_prob) / prior_prob)


def drop_path_rates(max_rate: float, num_blocks: int) -> list[float]:
    """Stochastic depth rates rising linearly from 0 to ``max_rate`` over ``num_blocks`` blocks
    (``torch.linspace(0, max_rate, num_blocks)``, in Python: buildable on the meta device)."""
    return [max_rate * j / max(num_blocks - 1, 1) for j in range(num_blocks)]


def drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth on a residual branch x (N, ...): while training, each image's branch is
    zeroed with probability ``rate`` and the others scaled by 1 / (1 - rate); else x."""
    if not training or rate == 0:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device) >= rate
    return x * keep.to(x.dtype) / (1 - rate)
