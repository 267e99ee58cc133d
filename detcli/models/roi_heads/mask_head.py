"""Mask R-CNN's mask head: a small FCN on each positive RoI's pooled features, one mask per
class (MMDetection 3.3's ``FCNMaskHead``).

R RoIs (of the whole batch), C input channels, S x S the pooled size (the mask RoI extractor's
``output_size``, 14), F ``conv_out_channels``, K foreground classes, s the upsampling scale (2),
so the masks are h x w = sS x sS (28 x 28: ``train_cfg.rcnn.mask_size``).

Layers (MMDetection's names, so its checkpoints load with no key mapping)::

    (R, C, S, S) -convs.0 .. convs.{n-1}: 3x3 conv (+ norm), ReLU-> (R, F, S, S)
                 -upsample: 2x2 deconv stride 2, ReLU-> (R, F, 2S, 2S)  (or nearest, bilinear)
                 -conv_logits: 1x1 conv-> (R, K, 2S, 2S) logits  ((R, 1, ...) class-agnostic)

Training compares the logits of each positive RoI's GT class (``labels``) with its mask target
(:mod:`detcli.models.roi_heads.mask_target`) through ``loss_mask`` (CrossEntropyLoss with
``use_mask = true``: per-pixel sigmoid cross-entropy, averaged over every pixel of every
positive). At test time :meth:`FCNMaskHead.class_probs` gives the sigmoid probability of each
detection's class, which :mod:`detcli.models.roi_heads.mask_paste` pastes into the image.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError
from detcli.models.channels import require_in_channels
from detcli.models.layers import ConvModule, NormConfig
from detcli.models.losses import CrossEntropyLossConfig
from detcli.models.losses.cross_entropy_loss import class_channel
from detcli.registry import LOSSES, MASK_HEADS, LossConfig

UpsampleType = Literal["deconv", "nearest", "bilinear"]
NEEDS_MASK_LOSS = ("FCNMaskHead.loss_mask must be a mask loss (CrossEntropyLoss with "
                   "use_mask = true, which reads each RoI's class channel); got {name}")


class UpsampleConfig(Schema):
    """MMDetection's ``upsample_cfg``: a learned 2x2 deconvolution (``deconv``) or a fixed
    interpolation (``nearest``, ``bilinear``) by ``scale_factor``."""

    type: UpsampleType = "deconv"
    scale_factor: int = Field(2, ge=1)


def mask_loss_config() -> CrossEntropyLossConfig:
    return CrossEntropyLossConfig(use_mask=True, loss_weight=1.0)


class FCNMaskHeadConfig(Schema):
    """FCNMaskHead settings (MMDetection 3.3 names and defaults)."""

    type: Literal["FCNMaskHead"] = "FCNMaskHead"
    num_classes: int = Field(ge=1)
    in_channels: int | None = Field(None, ge=1)  # derived from the mask RoI extractor
    num_convs: int = Field(4, ge=0)
    roi_feat_size: int = Field(14, ge=1)  # must equal the mask extractor's output_size
    conv_kernel_size: int = Field(3, ge=1)
    conv_out_channels: int = Field(256, ge=1)
    class_agnostic: bool = False  # one mask per RoI instead of one per class
    upsample_cfg: UpsampleConfig = Field(default_factory=UpsampleConfig)
    norm_cfg: Maybe[NormConfig] = None  # a norm after each conv (MMDetection's GN variants)
    loss_mask: LossConfig = Field(default_factory=mask_loss_config)

    @field_validator("conv_kernel_size")
    @classmethod
    def _odd_kernel(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"conv_kernel_size must be odd (the convs keep the RoI size with "
                             f"padding (k - 1) / 2), got {value}")
        return value

    @field_validator("loss_mask")
    @classmethod
    def _mask_loss(cls, value: Schema) -> Schema:
        if not getattr(value, "use_mask", False):
            raise ValueError(NEEDS_MASK_LOSS.format(name=getattr(value, "type", "the loss")))
        return value


@MASK_HEADS.register(FCNMaskHeadConfig)
class FCNMaskHead(nn.Module):
    """``forward(roi_feats)``: (R, C, S, S) -> mask logits (R, K or 1, sS, sS)."""

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int,
        num_convs: int = 4,
        roi_feat_size: int = 14,
        conv_kernel_size: int = 3,
        conv_out_channels: int = 256,
        class_agnostic: bool = False,
        upsample_cfg: UpsampleConfig | None = None,
        norm_cfg: NormConfig | None = None,
        loss_mask: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        loss_mask = loss_mask if loss_mask is not None else LOSSES.build(mask_loss_config())
        if not getattr(loss_mask, "use_mask", False):
            raise ConfigError(NEEDS_MASK_LOSS.format(name=type(loss_mask).__name__))
        upsample_cfg = upsample_cfg if upsample_cfg is not None else UpsampleConfig()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.roi_feat_size = roi_feat_size
        self.class_agnostic = class_agnostic
        self.upsample_method: UpsampleType = upsample_cfg.type
        self.scale_factor = upsample_cfg.scale_factor
        self.loss_mask = loss_mask
        self.convs = nn.ModuleList(
            ConvModule(in_channels if i == 0 else conv_out_channels, conv_out_channels,
                       conv_kernel_size, padding=(conv_kernel_size - 1) // 2, norm_cfg=norm_cfg)
            for i in range(num_convs))
        width = conv_out_channels if num_convs > 0 else in_channels
        self.upsample: nn.Module | None = None
        if self.upsample_method == "deconv":
            self.upsample = nn.ConvTranspose2d(width, conv_out_channels, self.scale_factor,
                                               stride=self.scale_factor)
            width = conv_out_channels
        self.conv_logits = nn.Conv2d(width, 1 if class_agnostic else num_classes, 1)
        self.init_weights()

    @classmethod
    def from_config(cls, cfg: FCNMaskHeadConfig) -> FCNMaskHead:
        """Build the loss a resolved config describes; ``in_channels`` is the mask extractor's,
        connected when the detector's config resolved."""
        return cls(num_classes=cfg.num_classes,
                   in_channels=require_in_channels(
                       "FCNMaskHead", cfg.in_channels,
                       "mask RoI extractor's out_channels (the neck's channels)"),
                   num_convs=cfg.num_convs, roi_feat_size=cfg.roi_feat_size,
                   conv_kernel_size=cfg.conv_kernel_size,
                   conv_out_channels=cfg.conv_out_channels, class_agnostic=cfg.class_agnostic,
                   upsample_cfg=cfg.upsample_cfg, norm_cfg=cfg.norm_cfg,
                   loss_mask=LOSSES.build(cfg.loss_mask))

    def init_weights(self) -> None:
        """MMDetection's: the convs as MMCV's ConvModule (Kaiming normal, fan_out), the deconv
        and ``conv_logits`` Kaiming normal (fan_out, ReLU) with zero bias."""
        for conv in self.convs:
            conv.init_weights()
        for layer in (self.upsample, self.conv_logits):
            if layer is not None:
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.constant_(layer.bias, 0.0)

    @property
    def mask_size(self) -> int:
        """The side of the predicted masks: ``roi_feat_size`` times the upsampling scale."""
        return self.roi_feat_size * self.scale_factor

    def forward(self, roi_feats: Tensor) -> Tensor:
        """(R, C, S, S) -> (R, K or 1, sS, sS) logits."""
        x = roi_feats
        for conv in self.convs:
            x = conv(x)  # (R, F, S, S)
        if self.upsample is not None:
            x = F.relu(self.upsample(x))  # (R, F, sS, sS)
        elif self.scale_factor > 1:  # nearest or bilinear
            x = F.interpolate(x, scale_factor=self.scale_factor, mode=self.upsample_method,
                              align_corners=None if self.upsample_method == "nearest" else False)
        return self.conv_logits(x)

    def loss(self, mask_preds: Tensor, mask_targets: Tensor, labels: Tensor,
             weights: Tensor) -> dict[str, Tensor]:
        """``{"loss_mask"}``: mask_preds (R, K or 1, h, w), mask_targets (R, h, w) in {0, 1},
        labels (R,) the GT class of each RoI, weights (R,) 1 on the positives that count and 0
        on padding slots. The mean over every pixel of the counted RoIs (MMDetection's), a
        connected zero when there are none. No host sync."""
        if self.class_agnostic:
            labels = torch.zeros_like(labels)
        pixels = mask_preds.shape[-2] * mask_preds.shape[-1]
        avg_factor = weights.sum() * pixels  # () on the device
        loss = self.loss_mask(mask_preds, mask_targets, weights, avg_factor=avg_factor,
                              labels=labels)
        return {"loss_mask": loss}

    def class_probs(self, mask_preds: Tensor, labels: Tensor) -> Tensor:
        """The sigmoid probability masks of each RoI's class: mask_preds (R, K or 1, h, w),
        labels (R,) -> (R, h, w) float32 (labels outside [0, K) read class K - 1 or 0)."""
        if self.class_agnostic:
            labels = torch.zeros_like(labels)
        return class_channel(mask_preds.float(), labels).sigmoid()
