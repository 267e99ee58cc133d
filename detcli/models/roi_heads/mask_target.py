"""Mask targets: each positive RoI's GT mask, cropped to the RoI and resized to h x w (28 x 28).

N images, G GT slots per image, H x W the batch's padded image size, S RoI slots per image.

MMDetection 3.3's ``mask_target``, batched over the whole batch in one call: the RoI is
clipped to the mask's extent ([0, W] x [0, H]), then the GT mask of its matched slot is cut to
it and resampled to h x w by :func:`detcli.structures.masks.crop_and_resize` (RoIAlign,
``aligned = true``, adaptive sampling, then ``>= 0.5``: ``BitmapMasks.crop_and_resize``). The
masks are indexed as one (N*G, H, W) stack, so every RoI of every image is cropped together,
without a Python loop and without a host sync.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detcli.structures.masks import crop_and_resize


def mask_targets(gt_masks: Tensor, rois: Tensor, gt_index: Tensor,
                 mask_size: tuple[int, int]) -> Tensor:
    """GT masks cropped to RoIs: gt_masks (N, G, H, W) {0, 1}, rois (N, S, 4) x1y1x2y2 in
    network-input pixels, gt_index (N, S) the GT slot of each RoI (negative: none),
    mask_size (h, w) -> (N, S, h, w) float32 in {0, 1}; zeros where gt_index < 0."""
    num_images, num_slots = gt_index.shape
    num_gts, height, width = gt_masks.shape[1:]
    out_h, out_w = mask_size
    if num_gts == 0 or num_slots == 0:
        return rois.new_zeros(num_images, num_slots, out_h, out_w, dtype=torch.float32)
    boxes = rois.float().clone()  # (N, S, 4)
    boxes[..., 0::2] = boxes[..., 0::2].clamp(min=0, max=width)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(min=0, max=height)
    image = torch.arange(num_images, device=rois.device)[:, None]  # (N, 1)
    stack_index = image * num_gts + gt_index.clamp(min=0)  # (N, S) row of the (N*G) stack
    stack = gt_masks.reshape(num_images * num_gts, height, width)  # (N*G, H, W)
    crops = crop_and_resize(stack, boxes.reshape(-1, 4), stack_index.reshape(-1),
                            (out_h, out_w))  # (N*S, h, w) in {0, 1}
    crops = crops.view(num_images, num_slots, out_h, out_w)
    return crops * (gt_index >= 0)[..., None, None]  # (N, S, h, w)
