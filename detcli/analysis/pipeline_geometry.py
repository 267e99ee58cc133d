"""Where GT boxes land in the network input, from a pipeline config, without decoding images.

I images, T GT boxes over all of them. Sizes are (h, w) pairs and ``img_scale`` pairs are
(w, h), as in :mod:`detcli.data.transforms.geometric`; boxes are (x1, y1, x2, y2) pixels.

Analysing anchors needs each box's size and position in the network input, not the pixels: the
Resize and Pad arithmetic applied to the image sizes of the annotation file (``img_infos``)
gives them exactly, for a whole dataset in milliseconds, where running the pipeline would decode
and resize every image. The arithmetic is the transforms' own: MMCV's keep-ratio rule
(:func:`~detcli.data.transforms.geometric.rescale_size`), a float32 ``scale_factor``, boxes
clipped to the resized image (``bbox_clip_border``), padding at the bottom and right (boxes do
not move).

What is modelled, step by step:

- ``MultiScaleFlipAug``: its first scale (``img_scale`` or ``scale_factor``) and its inner
  transforms; flipped views are left out (a flip mirrors boxes, their sizes stay);
- ``Resize``: the scale MultiScaleFlipAug sets, else its first ``img_scale`` (a Resize that
  draws among several, or with ``ratio_range``, is analysed at that one, and a note says so);
- ``Pad``: ``size_divisor``, ``size`` or ``pad_to_square``;
- steps that move no pixels (loading, Normalize, formatting, photometric) change nothing;
  ``RandomFlip`` changes positions only and is left out; anything else (``RandomCrop``, a
  plugin's transform) is left out with a note.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from detcli.data.transforms.geometric import scale_list

NO_GEOMETRY = frozenset({"LoadImageFromFile", "LoadAnnotations", "Normalize", "DefaultFormatBundle",
                         "ImageToTensor", "Collect", "PhotoMetricDistortion"})


@dataclass
class PipelineGeometry:
    """Resize and Pad settings read from a pipeline config; see the module docstring."""

    source: str  # which pipeline, e.g. "data.val.pipeline"
    img_scale: Optional[tuple[int, int]] = None  # (w, h); None with scale_factor or no Resize
    scale_factor: Optional[float] = None  # MultiScaleFlipAug(scale_factor=...)
    keep_ratio: bool = True
    clip_border: bool = True
    resize: bool = False  # a Resize step is present
    pad_size_divisor: Optional[int] = None
    pad_size: Optional[tuple[int, int]] = None  # (h, w)
    pad_to_square: bool = False
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_pipeline(cls, pipeline: Sequence[Any], source: str) -> PipelineGeometry:
        """Read the geometry of a list of transform configs (config models or dicts)."""
        geometry = cls(source=source)
        geometry._read(pipeline, outer_scale=False)
        if not geometry.resize:
            geometry.notes.append(f"{source} has no Resize: boxes keep their original size")
        return geometry

    def _read(self, pipeline: Sequence[Any], outer_scale: bool) -> None:
        for step in pipeline:
            get = _getter(step)
            kind = get("type")
            if kind == "MultiScaleFlipAug":
                self._read_tta(get)
                self._read(get("transforms") or [], outer_scale=True)
            elif kind == "Resize":
                self._read_resize(get, outer_scale)
            elif kind == "Pad":
                self.pad_size_divisor = get("size_divisor")
                size = get("size")
                self.pad_size = (int(size[0]), int(size[1])) if size is not None else None
                self.pad_to_square = bool(get("pad_to_square"))
            elif kind == "RandomFlip":
                continue
            elif kind not in NO_GEOMETRY:
                self.notes.append(f"{kind} in {self.source} is not applied to the boxes")

    def _read_tta(self, get: Any) -> None:
        scales = scale_list(get("img_scale"))
        factors = get("scale_factor")
        if scales:
            self.img_scale = tuple(int(v) for v in scales[0])  # type: ignore[assignment]
            many = len(scales) > 1
        else:
            factors = factors if isinstance(factors, list) else [factors]
            self.scale_factor, many = float(factors[0]), len(factors) > 1
        if many:
            self.notes.append(f"MultiScaleFlipAug has several scales; analysed at the first, "
                              f"{self.img_scale or self.scale_factor}")

    def _read_resize(self, get: Any, outer_scale: bool) -> None:
        self.resize = True
        self.keep_ratio = bool(get("keep_ratio", True))
        self.clip_border = bool(get("bbox_clip_border", True))
        if outer_scale:
            return
        scales = scale_list(get("img_scale"))
        if not scales:
            self.notes.append(f"Resize in {self.source} has no img_scale: boxes keep their size")
            self.resize = False
            return
        self.img_scale = tuple(int(v) for v in scales[0])  # type: ignore[assignment]
        if len(scales) > 1 or get("ratio_range") is not None:
            self.notes.append(f"Resize draws a random scale; analysed at img_scale {self.img_scale}")

    # -- arithmetic, vectorised over images ---------------------------------------------------

    def shapes(self, heights: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Original (I,) heights and widths -> (img_shape (I, 2) int64 (h, w) after resize,
        pad_shape (I, 2) int64 (h, w), factors (I, 2) float32 (sx, sy))."""
        h = np.asarray(heights, dtype=np.float64)  # (I,)
        w = np.asarray(widths, dtype=np.float64)  # (I,)
        new_w, new_h = w, h
        if self.resize:
            if self.img_scale is not None:
                scale_w = np.full_like(w, self.img_scale[0])
                scale_h = np.full_like(h, self.img_scale[1])
            else:  # MultiScaleFlipAug scale_factor: Resize targets (int(w * f), int(h * f))
                scale_w = np.floor(w * self.scale_factor)
                scale_h = np.floor(h * self.scale_factor)
            if self.keep_ratio:
                long_s, short_s = np.maximum(scale_w, scale_h), np.minimum(scale_w, scale_h)
                factor = np.minimum(long_s / np.maximum(h, w), short_s / np.minimum(h, w))  # (I,)
                new_w, new_h = np.floor(w * factor + 0.5), np.floor(h * factor + 0.5)
            else:
                new_w, new_h = scale_w, scale_h
        img_shape = np.stack([new_h, new_w], axis=1).astype(np.int64)  # (I, 2)
        factors = np.stack([new_w / w, new_h / h], axis=1).astype(np.float32)  # (I, 2)
        return img_shape, self._pad(img_shape), factors

    def _pad(self, img_shape: np.ndarray) -> np.ndarray:
        """(I, 2) image shapes -> (I, 2) padded shapes."""
        if self.pad_to_square:
            side = img_shape.max(axis=1, keepdims=True)  # (I, 1)
            return np.repeat(side, 2, axis=1)  # (I, 2)
        if self.pad_size is not None:
            return np.broadcast_to(np.array(self.pad_size, dtype=np.int64), img_shape.shape).copy()
        if self.pad_size_divisor:
            d = self.pad_size_divisor
            return -(-img_shape // d) * d
        return img_shape.copy()

    def boxes(self, boxes: np.ndarray, image: np.ndarray, factors: np.ndarray,
              img_shape: np.ndarray) -> np.ndarray:
        """Original-pixel boxes (T, 4) of images ``image`` (T,) -> network-input boxes (T, 4),
        with the per-image ``factors`` (I, 2) and ``img_shape`` (I, 2) of :meth:`shapes`."""
        sxsy = factors[image]  # (T, 2)
        out = boxes.astype(np.float32) * np.concatenate([sxsy, sxsy], axis=1)  # (T, 4)
        if self.resize and self.clip_border:
            hw = img_shape[image].astype(np.float32)  # (T, 2) as (h, w)
            upper = np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], axis=1)  # (T, 4)
            out = np.clip(out, 0, upper)
        return out

    def to_dict(self) -> dict[str, Any]:
        pad = ({"size_divisor": self.pad_size_divisor} if self.pad_size_divisor else
               {"size": list(self.pad_size)} if self.pad_size else
               {"pad_to_square": True} if self.pad_to_square else None)
        return {
            "pipeline": self.source,
            "img_scale": list(self.img_scale) if self.img_scale else None,
            "scale_factor": self.scale_factor,
            "keep_ratio": self.keep_ratio if self.resize else None,
            "pad": pad,
            "notes": list(self.notes),
        }


def _getter(step: Any) -> Any:
    """``get(key, default)`` over a transform config model or a plain dict."""
    if isinstance(step, dict):
        return step.get
    return lambda key, default=None: getattr(step, key, default)


def network_input_geometry(data_cfg: Any, split: str) -> PipelineGeometry:
    """The geometry of the test-size pipeline: ``data.val``'s, else ``data.test``'s, else the
    analysed split's own (the first of them with a Resize)."""
    candidates = [name for name in ("val", "test", split) if data_cfg.split(name) is not None]
    first: Optional[PipelineGeometry] = None
    for name in dict.fromkeys(candidates):
        geometry = PipelineGeometry.from_pipeline(data_cfg.split(name).pipeline, f"data.{name}.pipeline")
        if geometry.resize:
            return geometry
        first = first or geometry
    return first or PipelineGeometry(source="(no pipeline)", notes=["no pipeline: original sizes"])
