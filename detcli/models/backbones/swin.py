"""Swin Transformer (Liu et al. 2021), as MMDetection 3.3's ``SwinTransformer``.

N images, H x W input, P the patch size, C_i = ``embed_dims * 2**i`` the channels of stage i,
h x w the token grid of a stage, M = ``window_size``, T = M * M tokens per window, W the
windows of one image, D the heads of a stage.

Layout (MMDetection's names):

- ``patch_embed``: ``projection`` (a P x P stride-P conv; the input first zero-padded at the
  bottom and right to multiples of P) and, with ``patch_norm``, a LayerNorm ``norm``;
- ``stages.i.blocks.j``: ``norm1``, ``attn.w_msa`` (window attention: ``qkv``, ``proj``,
  ``relative_position_bias_table`` of (2M - 1)**2 x D, the ``relative_position_index`` buffer
  T x T), ``norm2``, ``ffn.layers.0.0`` (Linear to ``mlp_ratio * C_i``, GELU) and
  ``ffn.layers.1`` (Linear back); each branch adds back its input (stochastic depth on the
  branch while training, the rate rising linearly to ``drop_path_rate`` over all blocks).
  Odd blocks shift the windows by M // 2 (a cyclic roll, with a mask of -100 between tokens
  the roll brought together), even blocks do not; the grid is zero-padded at the bottom and
  right to multiples of M for the attention, and cropped back. As MMDetection, a shifted
  block shifts even when one window covers the whole grid (torchvision does not);
- ``stages.i.downsample`` (i < 3): PatchMerging, ``norm`` (LayerNorm over 4 C_i) then
  ``reduction`` (Linear 4 C_i -> 2 C_i, no bias) of each 2 x 2 neighbourhood (an odd grid
  zero-padded at the bottom and right), its 4 C_i values ordered as ``nn.Unfold`` orders
  them: channel-major, then (0, 0), (0, 1), (1, 0), (1, 1);
- ``norm{i}``: a LayerNorm on output i (stage i before its downsample, stride ``P * 2**i``).

Weights: ``convert_weights = true`` reads the original Swin repository's layout
(``layers.i``, ``patch_embed.proj``, ``mlp.fc1`` ...; MMDetection's ``swin_converter``,
:func:`~detcli.models.backbones.swin_weights.swin_from_original`), the layout of the
``swin_tiny_patch4_window7_224.pth`` file MMDetection's configs name; ``torchvision://swin_t``
(``_s``, ``_b``) loads torchvision's ``features.k`` layout
(:func:`~detcli.models.backbones.swin_weights.swin_from_torchvision`). Both reorder the merging weights from
the original (0, 0), (1, 0), (0, 1), (1, 1) concatenation to the unfold order. Neither file
has the output norms ``norm{i}``, which keep their init, as in MMDetection.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpoint
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe
from detcli.errors import CheckpointError
from detcli.models.backbones.freezing import freeze
from detcli.models.backbones.swin_weights import (
    fit_bias_tables,
    swin_from_original,
    swin_from_torchvision,
)
from detcli.models.channels import BackboneSchema
from detcli.models.layers import drop_path, drop_path_rates
from detcli.models.pretrained import PretrainedInit, load_state, read_checkpoint
from detcli.registry import BACKBONES

SHIFT_MASK = -100.0  # the attention logit between tokens the cyclic shift brought together
# the published designs: (embed_dims, depths, num_heads)
DESIGNS = {"t": (96, [2, 2, 6, 2], [3, 6, 12, 24]), "s": (96, [2, 2, 18, 2], [3, 6, 12, 24]),
           "b": (128, [2, 2, 18, 2], [4, 8, 16, 32])}
ORIGINAL_WEIGHTS = {  # the original repository's ImageNet-1k files (convert_weights)
    design: "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
            f"swin_{size}_patch4_window7_224.pth"
    for design, size in (("t", "tiny"), ("s", "small"), ("b", "base"))}


class SwinTransformerConfig(BackboneSchema):
    """Swin settings (MMDetection 3.3's names and defaults)."""

    type: Literal["SwinTransformer"] = "SwinTransformer"
    pretrain_img_size: int = Field(224, ge=1)  # sizes absolute_pos_embed
    in_channels: int = Field(3, ge=1)
    embed_dims: int = Field(96, ge=1)
    patch_size: int = Field(4, ge=1)
    window_size: int = Field(7, ge=1)
    mlp_ratio: int = Field(4, ge=1)
    depths: list[int] = Field(default_factory=lambda: [2, 2, 6, 2], min_length=1)
    num_heads: list[int] = Field(default_factory=lambda: [3, 6, 12, 24], min_length=1)
    strides: list[int] = Field(default_factory=lambda: [4, 2, 2, 2], min_length=1)
    out_indices: list[int] = Field(default_factory=lambda: [0, 1, 2, 3])
    qkv_bias: bool = True
    qk_scale: Maybe[float] = Field(None, gt=0)
    patch_norm: bool = True
    drop_rate: float = Field(0.0, ge=0, lt=1)
    attn_drop_rate: float = Field(0.0, ge=0, lt=1)
    drop_path_rate: float = Field(0.1, ge=0, lt=1)
    use_abs_pos_embed: bool = False
    with_cp: bool = False
    convert_weights: bool = False
    frozen_stages: int = Field(-1, ge=-1)
    init_cfg: Maybe[PretrainedInit] = None

    @model_validator(mode="after")
    def _consistent(self) -> SwinTransformerConfig:
        stages = len(self.depths)
        if len(self.num_heads) != stages or len(self.strides) != stages:
            raise ValueError(f"depths {self.depths}, num_heads {self.num_heads} and strides "
                             f"{self.strides} need one entry per stage")
        if self.strides[0] != self.patch_size:
            raise ValueError(f"strides[0] ({self.strides[0]}) must equal patch_size "
                             f"({self.patch_size}): the patch embedding does not overlap")
        if any(s != 2 for s in self.strides[1:]):
            raise ValueError(f"strides {self.strides}: every stage after the first halves the "
                             "grid (PatchMerging of 2 x 2 neighbourhoods), so each must be 2")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dims << i) % heads:
                raise ValueError(f"num_heads[{i}] = {heads} does not divide stage {i}'s "
                                 f"{self.embed_dims << i} channels (embed_dims * 2**{i})")
        if not self.out_indices or any(not 0 <= i < stages for i in self.out_indices):
            raise ValueError(f"out_indices {self.out_indices} must be non-empty, each in "
                             f"[0, {stages})")
        if self.frozen_stages > stages:
            raise ValueError(f"frozen_stages {self.frozen_stages} exceeds the {stages} stages")
        return self

    def out_channels(self) -> list[int]:
        return [self.embed_dims << i for i in self.out_indices]

    def _design(self) -> str | None:
        """``"t"``, ``"s"`` or ``"b"`` when this is a published Swin design at patch 4, window 7."""
        if (self.patch_size, self.window_size, self.mlp_ratio, self.in_channels,
                self.use_abs_pos_embed) != (4, 7, 4, 3, False) or not self.patch_norm:
            return None
        for name, design in DESIGNS.items():
            if (self.embed_dims, self.depths, self.num_heads) == design:
                return name
        return None

    def label(self) -> str:
        """``Swin-T`` (``-S``, ``-B``) for the published designs, else ``Swin (96, depths
        2-2-18-2)``."""
        design = self._design()
        if design is not None:
            return f"Swin-{design.upper()}"
        return f"Swin ({self.embed_dims}, depths {'-'.join(map(str, self.depths))})"

    def weights(self) -> list[str]:
        """torchvision's ``swin_{t,s,b}`` (converted on load) and, with ``convert_weights``, the
        original repository's file MMDetection's configs name."""
        design = self._design()
        if design is None:
            return []
        original = [ORIGINAL_WEIGHTS[design]] if self.convert_weights else []
        return [f"torchvision://swin_{design}"] + original


def relative_position_index(window_size: int) -> Tensor:
    """(T, T) index into the bias table: token a = (ya, xa), b = (yb, xb) of one window ->
    (ya - yb + M - 1) (2M - 1) + (xa - xb + M - 1)."""
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)  # (T,)
    dy = ys[:, None] - ys[None, :] + window_size - 1
    dx = xs[:, None] - xs[None, :] + window_size - 1
    return dy * (2 * window_size - 1) + dx


def shift_mask(height: int, width: int, window_size: int, shift: int,
               device: torch.device) -> Tensor:
    """(W, T, T) additive mask of a shifted block on an h x w grid (multiples of M): 0 between
    tokens of the same region before the roll, -100 between tokens of different regions. The
    regions along each axis are [0, h - M), [h - M, h - shift), [h - shift, h)."""
    def regions(size: int) -> Tensor:
        pos = torch.arange(size, device=device)
        return (pos >= size - window_size).long() + (pos >= size - shift).long()

    region = regions(height)[:, None] * 3 + regions(width)[None, :]  # (h, w)
    windows = partition(region[None, :, :, None], window_size).reshape(-1, window_size ** 2)
    same = windows[:, :, None] == windows[:, None, :]  # (W, T, T)
    return torch.zeros(same.shape, device=device).masked_fill(~same, SHIFT_MASK)


def partition(x: Tensor, window_size: int) -> Tensor:
    """(N, h, w, C) -> (N, W, T, C), windows row by row."""
    n, h, w, c = x.shape
    x = x.reshape(n, h // window_size, window_size, w // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, -1, window_size * window_size, c)


def merge(windows: Tensor, height: int, width: int) -> Tensor:
    """(N, W, T, C) -> (N, h, w, C), the inverse of :func:`partition`."""
    n, _, t, c = windows.shape
    m = math.isqrt(t)
    x = windows.reshape(n, height // m, width // m, m, m, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, height, width, c)


class WindowMSA(nn.Module):
    """Multi-head self-attention within windows, with a learned relative position bias:
    (N, W, T, C) and an optional (W, T, T) mask -> (N, W, T, C)."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, *, qkv_bias: bool,
                 qk_scale: float | None, attn_drop_rate: float, proj_drop_rate: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = qk_scale or (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(embed_dims, 3 * embed_dims, bias=qkv_bias)
        self.attn_drop_rate = attn_drop_rate
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        n, nw, t, c = x.shape
        qkv = self.qkv(x).reshape(n * nw, t, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N W, D, T, C / D)
        bias = self.relative_position_bias_table[self.relative_position_index]  # (T, T, D)
        bias = bias.permute(2, 0, 1)  # (D, T, T)
        if mask is not None:  # per window: (W, D, T, T) repeated for each image
            bias = (bias + mask[:, None]).expand(n, -1, -1, -1, -1).reshape(n * nw, -1, t, t)
        # 4-D inputs: the fused kernels (CPU flash, CUDA memory-efficient) take them
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale,
            dropout_p=self.attn_drop_rate if self.training else 0.0)  # (N W, D, T, C / D)
        out = out.transpose(1, 2).reshape(n, nw, t, c)
        return self.proj_drop(self.proj(out))


class ShiftWindowMSA(nn.Module):
    """Window attention on a token grid (N, h, w, C) -> (N, h, w, C), windows shifted by
    ``shift_size``; stochastic depth on the result while training."""

    def __init__(self, embed_dims: int, num_heads: int, window_size: int, shift_size: int, *,
                 qkv_bias: bool, qk_scale: float | None, attn_drop_rate: float,
                 proj_drop_rate: float, drop_path_rate: float) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.drop_path_rate = drop_path_rate
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, qkv_bias=qkv_bias,
                               qk_scale=qk_scale, attn_drop_rate=attn_drop_rate,
                               proj_drop_rate=proj_drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        _, h, w, _ = x.shape
        m, s = self.window_size, self.shift_size
        x = F.pad(x, (0, 0, 0, -w % m, 0, -h % m))  # zeros at the right and bottom
        hp, wp = x.shape[1], x.shape[2]
        mask = None
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
            mask = shift_mask(hp, wp, m, s, x.device)
        x = merge(self.w_msa(partition(x, m), mask), hp, wp)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        return drop_path(x[:, :h, :w], self.drop_path_rate, self.training)


class FFN(nn.Module):
    """MMCV's two-layer FFN: ``layers.0.0`` Linear C -> F, GELU, dropout; ``layers.1`` Linear
    F -> C, dropout; plus the input (stochastic depth on the branch)."""

    def __init__(self, embed_dims: int, feedforward_channels: int, *, drop_rate: float,
                 drop_path_rate: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.GELU(),
                          nn.Dropout(drop_rate)),
            nn.Linear(feedforward_channels, embed_dims), nn.Dropout(drop_rate))
        self.drop_path_rate = drop_path_rate

    def forward(self, x: Tensor, identity: Tensor) -> Tensor:
        return identity + drop_path(self.layers(x), self.drop_path_rate, self.training)


class SwinBlock(nn.Module):
    """(N, h, w, C) -> (N, h, w, C): x + attn(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, embed_dims: int, num_heads: int, feedforward_channels: int, *,
                 window_size: int, shift: bool, qkv_bias: bool, qk_scale: float | None,
                 drop_rate: float, attn_drop_rate: float, drop_path_rate: float,
                 with_cp: bool) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size,
                                   window_size // 2 if shift else 0, qkv_bias=qkv_bias,
                                   qk_scale=qk_scale, attn_drop_rate=attn_drop_rate,
                                   proj_drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, feedforward_channels, drop_rate=drop_rate,
                       drop_path_rate=drop_path_rate)

    def _forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return self.ffn(self.norm2(x), identity=x)

    def forward(self, x: Tensor) -> Tensor:
        if self.with_cp and x.requires_grad:  # recompute in backward instead of storing
            return checkpoint.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class PatchMerging(nn.Module):
    """(N, h, w, C) -> (N, ceil(h / 2), ceil(w / 2), 2C): each 2 x 2 neighbourhood's 4C values
    in unfold order (channel-major), LayerNorm, Linear to 2C."""

    def __init__(self, in_channels: int, out_channels: int, *, patch_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels) if patch_norm else None
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, 0, x.shape[2] % 2, 0, x.shape[1] % 2))
        n, h, w, c = x.shape
        x = x.reshape(n, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 5, 2, 4)  # (.., C, 2, 2)
        x = x.reshape(n, h // 2, w // 2, 4 * c)
        return self.reduction(self.norm(x) if self.norm is not None else x)


class SwinBlockSequence(nn.Module):
    """One stage: ``blocks`` (even ones plain, odd ones shifted), then ``downsample``."""

    def __init__(self, blocks: list[SwinBlock], downsample: PatchMerging | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class PatchEmbed(nn.Module):
    """(N, 3, H, W) -> (N, ceil(H / P), ceil(W / P), C_0): padded, P x P stride-P conv, norm."""

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int, *,
                 patch_norm: bool) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims) if patch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        p = self.patch_size
        x = F.pad(x, (0, -x.shape[3] % p, 0, -x.shape[2] % p))
        x = self.projection(x).permute(0, 2, 3, 1)  # (N, h, w, C_0)
        return self.norm(x) if self.norm is not None else x


@BACKBONES.register(SwinTransformerConfig)
class SwinTransformer(nn.Module):
    """Swin returning the normed stage outputs of ``out_indices`` as (N, C_i, h_i, w_i) maps
    (channels-last in memory). ``frozen_stages = k >= 0`` stops the gradient of (and puts in
    eval mode) ``patch_embed`` (and ``absolute_pos_embed``), then ``stages.0..k-1`` with their
    downsamples and the output norms of those stages, as MMDetection's."""

    def __init__(self, *, pretrain_img_size: int = 224, in_channels: int = 3,
                 embed_dims: int = 96, patch_size: int = 4, window_size: int = 7,
                 mlp_ratio: int = 4, depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (3, 6, 12, 24), strides: Sequence[int] = (4, 2, 2, 2),
                 out_indices: Sequence[int] = (0, 1, 2, 3), qkv_bias: bool = True,
                 qk_scale: float | None = None, patch_norm: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.1,
                 use_abs_pos_embed: bool = False, with_cp: bool = False,
                 convert_weights: bool = False, frozen_stages: int = -1,
                 init_cfg: PretrainedInit | None = None) -> None:
        super().__init__()
        del strides  # validated by the config: (patch_size, 2, 2, ...)
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.convert_weights = convert_weights
        self.init_cfg = init_cfg
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, patch_norm=patch_norm)
        self.absolute_pos_embed = None
        if use_abs_pos_embed:
            grid = pretrain_img_size // patch_size
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, grid * grid, embed_dims))
        self.drop_after_pos = nn.Dropout(drop_rate)
        rates = drop_path_rates(drop_path_rate, sum(depths))
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            c = embed_dims << i
            blocks = [SwinBlock(c, num_heads[i], mlp_ratio * c, window_size=window_size,
                                shift=j % 2 == 1, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                drop_rate=drop_rate, attn_drop_rate=attn_drop_rate,
                                drop_path_rate=rates[sum(depths[:i]) + j], with_cp=with_cp)
                      for j in range(depth)]
            downsample = (PatchMerging(c, 2 * c, patch_norm=patch_norm)
                          if i < len(depths) - 1 else None)
            self.stages.append(SwinBlockSequence(blocks, downsample))
        self.out_channels = [embed_dims << i for i in self.out_indices]
        for i, c in zip(self.out_indices, self.out_channels):
            self.add_module(f"norm{i}", nn.LayerNorm(c))
        self.reset_parameters()
        self._freeze_stages()

    def reset_parameters(self) -> None:
        """MMDetection's init without a checkpoint: truncated normal (std 0.02) linears with
        zero biases, unit LayerNorms; the patch conv keeps PyTorch's init and the bias tables
        their zeros (MMDetection's Swin does not initialise its children)."""
        if self.absolute_pos_embed is not None:
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """Load ``init_cfg``'s checkpoint: torchvision's layout converted when it has it, the
        original Swin layout when ``convert_weights``; a ``backbone.`` prefix is stripped; the bias
        tables of another window resized (:func:`fit_bias_tables`)."""
        if self.init_cfg is None:
            return
        source = self.init_cfg.checkpoint
        state = read_checkpoint(source)
        if any(k.startswith("features.") for k in state):
            state = swin_from_torchvision(state)
        elif self.convert_weights:
            state = swin_from_original(state)
        elif any(k.startswith("layers.") for k in state):
            raise CheckpointError(
                f"checkpoint {source!r} is in the original Swin layout (layers.*, "
                "patch_embed.proj) but model.backbone.convert_weights is false",
                hint="set model.backbone.convert_weights = true to convert it on load")
        if any(k.startswith("backbone.") for k in state):  # a detector's file, as MMDetection
            state = {k[len("backbone."):]: v for k, v in state.items()
                     if k.startswith("backbone.")}
        load_state(self, fit_bias_tables(state, self.state_dict()), source)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            freeze(self.patch_embed)
            if self.absolute_pos_embed is not None:
                self.absolute_pos_embed.requires_grad = False
            self.drop_after_pos.eval()
        for i in range(self.frozen_stages):
            if i in self.out_indices:
                freeze(getattr(self, f"norm{i}"))
            freeze(self.stages[i])

    def train(self, mode: bool = True) -> SwinTransformer:
        super().train(mode)
        self._freeze_stages()
        return self

    def _add_pos_embed(self, x: Tensor) -> Tensor:
        """x + the absolute position embedding, resized bilinearly to x's grid when it differs
        from the pretraining grid (where MMDetection's would fail)."""
        _, h, w, c = x.shape
        grid = math.isqrt(self.absolute_pos_embed.shape[1])
        pos = self.absolute_pos_embed.reshape(1, grid, grid, c)
        if (h, w) != (grid, grid):
            pos = F.interpolate(pos.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                align_corners=False).permute(0, 2, 3, 1)
        return x + pos

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.patch_embed(x)  # (N, h_0, w_0, C_0)
        if self.absolute_pos_embed is not None:
            x = self._add_pos_embed(x)
        x = self.drop_after_pos(x)
        outs = []
        for i, stage in enumerate(self.stages):
            for block in stage.blocks:
                x = block(x)  # (N, h_i, w_i, C_i)
            if i in self.out_indices:
                outs.append(getattr(self, f"norm{i}")(x).permute(0, 3, 1, 2))  # (N, C_i, h, w)
            if stage.downsample is not None:
                x = stage.downsample(x)  # (N, h_i / 2, w_i / 2, 2 C_i)
        return tuple(outs)
