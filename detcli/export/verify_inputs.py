"""New inputs for checking an export: the config's test images, else synthetic ones.

N images per batch, h x w one preprocessed image, H x W a batch (images padded at the bottom
and right with 0, the value padding has after Normalize).

Real images are preferred: a trained model keeps detections on them, so the comparison covers
NMS and the top-M step, not just empty outputs. They are the first image files of the test
split's folder (``data.test.img_prefix``, else ``data.val``'s), run through the test pipeline.
Without them, smooth random images (normalised values, blobs a few strides wide) stand in.

The batches differ from the tracing input in content always, and in shape wherever the export
is dynamic: a dynamic batch is checked with 3 images and with 1 (it was traced with 2), a
dynamic size with the images' own padded sizes and with a size that is neither the tracing
nor the default one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from detcli.errors import DetError
from detcli.export.onnx import ExportOptions
from detcli.inference.files import is_image_file

log = logging.getLogger(__name__)

def folder_images(folder: Path | None, preprocess: Any, count: int) -> list[Tensor]:
    """Up to ``count`` preprocessed images (3, h, w) from ``folder``; unreadable ones skipped."""
    if folder is None or not folder.is_dir():
        return []
    files = sorted(p for p in folder.rglob("*") if is_image_file(p))
    images: list[Tensor] = []
    for path in files:
        if len(images) == count:
            break
        try:
            images.append(preprocess.sample(path)["img"].float())  # (3, h, w)
        except DetError as exc:
            log.debug("verification skips %s: %s", path, exc)
    return images


def synthetic_images(sizes: Sequence[tuple[int, int]], seed: int = 1) -> list[Tensor]:
    """One smooth random image (3, h, w) per (h, w): blobs about 16 pixels wide plus noise."""
    generator = torch.Generator().manual_seed(seed)
    images = []
    for h, w in sizes:
        coarse = torch.randn(1, 3, -(-h // 16), -(-w // 16),
                             generator=generator)  # (1, 3, h/16, w/16) rounded up
        smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
        images.append(smooth * 1.5 + 0.2 * torch.randn(3, h, w, generator=generator))  # (3, h, w)
    return images


def pad_batch(images: Sequence[Tensor], size: tuple[int, int] | None = None) -> Tensor:
    """Stack (3, h_i, w_i) images into (N, 3, H, W), zero-padded at the bottom and right to
    ``size`` (h, w) or to the largest image."""
    height = size[0] if size else max(img.shape[-2] for img in images)
    width = size[1] if size else max(img.shape[-1] for img in images)
    return torch.stack([F.pad(img, (0, width - img.shape[-1], 0, height - img.shape[-2]))
                        for img in images])  # (N, 3, H, W)


def verification_batches(images: Sequence[Tensor], options: ExportOptions,
                         input_size: tuple[int, int], size_step: int = 32) -> list[Tensor]:
    """Batches (N, 3, H, W) for :func:`~detcli.export.verify.verify_onnx` (module docstring).

    ``images`` are preprocessed real images, possibly none; synthetic ones fill the gaps.
    """
    height, width = input_size
    if options.dynamic_size:
        fits = list(images)
        sizes = [(height, width), (max(height - size_step, 32), width + size_step),
                 (height + size_step, max(width - size_step, 32)), (height, width)]
    else:
        fits = [img for img in images if img.shape[-2] <= height and img.shape[-1] <= width]
        sizes = [(height, width)] * 4
    dropped = len(images) - len(fits)
    if dropped:
        log.info("verification skips %d image(s) larger than the static input %d x %d",
                 dropped, height, width)
    pool = fits + synthetic_images(sizes[: max(0, 4 - len(fits))])
    groups = [pool[:3], pool[3:4]] if options.dynamic_batch else [[img] for img in pool[:3]]
    target = None if options.dynamic_size else (height, width)
    batches = [pad_batch(group, target) for group in groups if group]
    if options.dynamic_size:  # one size that is neither the tracing nor the default one
        odd = (max(height - size_step, 32), width + 2 * size_step)
        batches.append(pad_batch(synthetic_images([odd] * len(groups[-1]), seed=2)))
    return batches
