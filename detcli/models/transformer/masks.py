"""Padding masks of a batch for attention: which feature-map positions are padding.

N images, (H, W) the padded batch, (h, w) a feature map of it.

An image of the batch covers its ``img_shapes[i]`` = (h_i, w_i) top-left pixels; the rest is
padding. MMDetection's DETR marks those pixels at the input's resolution and resizes the mask
to the feature map with nearest-neighbour interpolation (``F.interpolate``'s default); this
does the same, batched: no loop over images and no host read of the shapes, so it runs inside a
train step without a device sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def input_padding_mask(img_shapes: Tensor, batch_shape: tuple[int, int]) -> Tensor:
    """(N, 2) int64 (h, w) per image -> (N, H, W) bool, True outside each image."""
    height, width = batch_shape
    rows = torch.arange(height, device=img_shapes.device)  # (H,)
    cols = torch.arange(width, device=img_shapes.device)  # (W,)
    outside_rows = rows[None, :] >= img_shapes[:, 0:1]  # (N, H)
    outside_cols = cols[None, :] >= img_shapes[:, 1:2]  # (N, W)
    return outside_rows[:, :, None] | outside_cols[:, None, :]


def feature_padding_mask(img_shapes: Tensor, batch_shape: tuple[int, int],
                         feat_shape: tuple[int, int]) -> Tensor:
    """(N, 2) image shapes -> (N, h, w) bool, True on the feature positions that lie in padding
    (the input mask, nearest-resized to ``feat_shape``)."""
    mask = input_padding_mask(img_shapes, batch_shape).to(torch.float32)[:, None]  # (N,1,H,W)
    return F.interpolate(mask, size=tuple(feat_shape)).to(torch.bool)[:, 0]
