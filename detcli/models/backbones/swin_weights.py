"""Swin weights in det's (MMDetection's) layout: the original repository's and torchvision's.

C channels of a stage. Both layouts concatenate a PatchMerging's 2 x 2 neighbourhood as
[x(0,0), x(1,0), x(0,1), x(1,1)] (C values each); det's (MMDetection's ``nn.Unfold``) orders
the 4C values channel-major, then (0,0), (0,1), (1,0), (1,1). So each ``downsample.reduction``
weight has its columns, and each ``downsample.norm`` weight and bias its entries, reordered.
"""

from __future__ import annotations

import math
import re
from typing import Mapping

import torch.nn.functional as F
from torch import Tensor


def unfold_order_reduction(weight: Tensor) -> Tensor:
    """A merging ``reduction`` weight (O, 4C) whose inputs are the original concatenation
    [x(0,0), x(1,0), x(0,1), x(1,1)] (C each) -> its columns in unfold order (c, then (0,0),
    (0,1), (1,0), (1,1))."""
    out_channels, in_channels = weight.shape
    weight = weight.reshape(out_channels, 4, in_channels // 4)[:, [0, 2, 1, 3]]
    return weight.transpose(1, 2).reshape(out_channels, in_channels)


def unfold_order_norm(value: Tensor) -> Tensor:
    """A merging ``norm`` weight or bias (4C,) in the original order -> unfold order."""
    return unfold_order_reduction(value[None])[0]


_ORIGINAL_RENAMES = (  # the original repository's key -> MMDetection's
    (r"^layers\.(\d+)\.", r"stages.\1."),
    (r"\.attn\.", ".attn.w_msa."),
    (r"\.mlp\.fc1\.", ".ffn.layers.0.0."),
    (r"\.mlp\.fc2\.", ".ffn.layers.1."),
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
)


def _merging_order(key: str, value: Tensor) -> Tensor:
    if ".downsample.reduction." in key:
        return unfold_order_reduction(value)
    if ".downsample.norm." in key:
        return unfold_order_norm(value)
    return value


def swin_from_original(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The original Swin repository's state dict -> det's (MMDetection's swin_converter):
    ``layers.i`` -> ``stages.i``, ``attn.`` -> ``attn.w_msa.``, ``mlp.fc1`` / ``fc2`` ->
    ``ffn.layers.0.0`` / ``ffn.layers.1``, ``patch_embed.proj`` -> ``patch_embed.projection``,
    merging weights reordered; ``head.*`` dropped. Other keys (the final ``norm``, the
    ``attn_mask`` buffers) stay as they are and are reported unused."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("head."):
            continue
        new = key
        for pattern, repl in _ORIGINAL_RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = _merging_order(new, value)
    return out


_TV_BLOCK = re.compile(r"^features\.(\d+)\.(\d+)\.(.+)$")
_TV_PATCH_EMBED = {"0": "projection", "2": "norm"}  # features.0: conv, permute, LayerNorm
_TV_BLOCK_PARTS = (("attn.", "attn.w_msa."), ("mlp.0.", "ffn.layers.0.0."),
                   ("mlp.3.", "ffn.layers.1."))


def swin_from_torchvision(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """torchvision's ``swin_t`` / ``swin_s`` / ``swin_b`` state dict -> det's names.

    ``features.0.{0,2}`` -> ``patch_embed.{projection,norm}``; ``features.{2i+1}.j`` ->
    ``stages.i.blocks.j`` (``attn.`` -> ``attn.w_msa.``, ``mlp.0`` / ``mlp.3`` ->
    ``ffn.layers.0.0`` / ``ffn.layers.1``; the flat relative position index reshaped to T x T);
    ``features.{2i+2}`` (PatchMerging) -> ``stages.i.downsample``, reordered to unfold order.
    ``norm.*`` (after the last stage) and ``head.*`` are dropped."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(("head.", "norm.")):
            continue
        if key.startswith("features.0."):
            index, rest = key[len("features.0."):].split(".", 1)
            out[f"patch_embed.{_TV_PATCH_EMBED[index]}.{rest}"] = value
            continue
        k = int(key.split(".")[1])
        if k % 2 == 0:  # features.{2i+2}: the merging after stage i
            new = f"stages.{k // 2 - 1}.downsample." + key.split(".", 2)[2]
            out[new] = _merging_order(new, value)
            continue
        _, _, j, rest = _TV_BLOCK.match(key).group(0, 1, 2, 3)
        for old, repl in _TV_BLOCK_PARTS:
            rest = rest.replace(old, repl, 1) if rest.startswith(old) else rest
        if rest.endswith("relative_position_index"):
            side = math.isqrt(value.numel())
            value = value.reshape(side, side)
        out[f"stages.{k // 2}.blocks.{j}.{rest}"] = value
    return out


def fit_bias_tables(state: Mapping[str, Tensor], own: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint's state made to fit a model whose window differs from its own (MMDetection's
    rule): each ``relative_position_bias_table`` ((2M' - 1)**2, D) is resized bicubically to the
    model's ((2M - 1)**2, D) as a (2M' - 1) x (2M' - 1) map per head, and the ``relative_position_index`` buffers of the
    other window are dropped (the model keeps its own; for the same window they are equal). A
    table with other heads is left for the load to report."""
    out = {k: v for k, v in state.items() if not (
        k.endswith("relative_position_index") and k in own and own[k].shape != v.shape)}
    for key, table in out.items():
        if not key.endswith("relative_position_bias_table") or key not in own:
            continue
        (rows, heads), (want_rows, want_heads) = table.shape, own[key].shape
        if rows == want_rows or heads != want_heads:
            continue
        side, want_side = math.isqrt(rows), math.isqrt(want_rows)
        grid = table.t().reshape(1, heads, side, side)
        resized = F.interpolate(grid.float(), size=(want_side, want_side), mode="bicubic")
        out[key] = resized.reshape(heads, want_rows).t().to(table.dtype).contiguous()
    return out
