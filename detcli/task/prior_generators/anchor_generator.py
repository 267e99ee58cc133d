"""Grid anchors for anchor-based dense heads, identical to MMDetection 2.x's ``AnchorGenerator``.

L levels; level l has a feature map of H_l x W_l locations and A_l base anchors per location
(A = number of ratios x number of scales); S scales, P ratios.

Layout (what checkpoints trained with MMDetection rely on):

- base anchors of one location, index ``a``: with ``scale_major`` (the default) ``a = p * S + s``
  (ratio p outer, scale s inner); without it ``a = s * P + p``. Anchor widths are
  ``base_size * scale / sqrt(ratio)``, heights ``base_size * scale * sqrt(ratio)`` (ratio is h/w);
- the base anchors are centred on ``(center_offset * base_size, center_offset * base_size)``
  (0 by default: on the top-left corner of the stride cell), and shifted to location (y, x)
  by ``(x * stride_w, y * stride_h)``;
- ``grid_priors`` returns, per level, a (H_l * W_l * A_l, 4) tensor ordered location-major,
  locations row-major (y outer, x inner), anchors inner: row ``(y * W_l + x) * A_l + a``. This
  matches a head output permuted ``(N, A*C, H, W) -> (N, H, W, A*C) -> (N, H*W*A, C)``.

Everything is computed in float32 (as MMDetection does) and cast to the requested dtype last.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any, ClassVar, Literal, Optional, Sequence, Union

import torch
from pydantic import Field, model_validator
from torch import Tensor

from detcli.config.schema import Maybe, Schema
from detcli.registry import PRIOR_GENERATORS

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]  # finite, > 0
Stride = Union[PositiveInt, tuple[PositiveInt, PositiveInt]]
FeatmapSizes = Sequence[tuple[int, int]]

_CACHE_SIZE = 8  # distinct (sizes, device, dtype) keys kept; multi-scale training cycles a few


class AnchorGeneratorConfig(Schema):
    """MMDetection's ``AnchorGenerator`` settings. Give ``scales``, or ``octave_base_scale``
    with ``scales_per_octave`` (RetinaNet), never both."""

    type: Literal["AnchorGenerator"] = "AnchorGenerator"
    strides: list[Stride] = Field(min_length=1)  # per level: s, or [s_w, s_h]
    ratios: list[PositiveFloat] = Field(min_length=1)  # anchor height / width
    scales: Maybe[list[PositiveFloat]] = None
    octave_base_scale: Maybe[PositiveFloat] = None
    scales_per_octave: Maybe[PositiveInt] = None
    base_sizes: Maybe[list[PositiveFloat]] = None  # default: the (shorter) stride of each level
    scale_major: bool = True
    center_offset: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> "AnchorGeneratorConfig":
        octave = (self.octave_base_scale is not None, self.scales_per_octave is not None)
        if octave[0] != octave[1]:
            raise ValueError(
                "octave_base_scale and scales_per_octave go together; got only "
                + ("octave_base_scale" if octave[0] else "scales_per_octave"))
        if (self.scales is not None) == octave[0]:
            raise ValueError(
                "give exactly one of `scales` or `octave_base_scale` + `scales_per_octave` "
                f"(got scales={self.scales}, octave_base_scale={self.octave_base_scale})")
        if self.base_sizes is not None and len(self.base_sizes) != len(self.strides):
            raise ValueError(
                f"base_sizes has {len(self.base_sizes)} entries but strides has "
                f"{len(self.strides)}; give one base size per level")
        return self


def octave_scales(octave_base_scale: float, scales_per_octave: int) -> list[float]:
    """RetinaNet's scales: ``octave_base_scale * 2 ** (i / scales_per_octave)``, i < S."""
    return [octave_base_scale * 2 ** (i / scales_per_octave) for i in range(scales_per_octave)]


@PRIOR_GENERATORS.register(AnchorGeneratorConfig)
class AnchorGenerator:
    """Anchors on every location of every level; see the module docstring for the layout.
    A :class:`~detcli.task.protocols.PriorGenerator` of boxes."""

    priors_are_points: ClassVar[bool] = False

    def __init__(
        self,
        *,
        strides: Sequence[Union[int, Sequence[int]]],
        ratios: Sequence[float],
        scales: Optional[Sequence[float]] = None,
        octave_base_scale: Optional[float] = None,
        scales_per_octave: Optional[int] = None,
        base_sizes: Optional[Sequence[float]] = None,
        scale_major: bool = True,
        center_offset: float = 0.0,
    ) -> None:
        # the settings were checked once, by AnchorGeneratorConfig (one way to scale, finite
        # positive scales and ratios, a base size per level)
        if scales is None:
            scales = octave_scales(octave_base_scale, scales_per_octave)  # type: ignore[arg-type]
        # (stride_w, stride_h) per level, as MMDetection's _pair
        self.strides = [(int(s), int(s)) if isinstance(s, (int, float))
                        else (int(s[0]), int(s[1])) for s in strides]
        self.base_sizes = (list(base_sizes) if base_sizes is not None
                           else [min(s) for s in self.strides])
        self.scales = torch.tensor(list(scales), dtype=torch.float32)  # (S,)
        self.ratios = torch.tensor(list(ratios), dtype=torch.float32)  # (P,)
        self.scale_major = scale_major
        self.center_offset = center_offset
        self.base_anchors = [self._base_anchors(size) for size in self.base_sizes]  # L x (A, 4)
        self._cache: OrderedDict[tuple, list[Tensor]] = OrderedDict()

    def __repr__(self) -> str:
        return (f"AnchorGenerator(strides={self.strides}, ratios={self.ratios.tolist()}, "
                f"scales={self.scales.tolist()}, base_sizes={self.base_sizes})")

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """A per level."""
        return [anchors.shape[0] for anchors in self.base_anchors]

    def _base_anchors(self, base_size: float) -> Tensor:
        """(A, 4) anchors of one location; operation order as MMDetection, for bitwise equality."""
        h_ratios = torch.sqrt(self.ratios)  # (P,)
        w_ratios = 1 / h_ratios  # (P,)
        if self.scale_major:
            ws = (base_size * w_ratios[:, None] * self.scales[None, :]).reshape(-1)  # (P*S,)
            hs = (base_size * h_ratios[:, None] * self.scales[None, :]).reshape(-1)  # (P*S,)
        else:
            ws = (base_size * self.scales[:, None] * w_ratios[None, :]).reshape(-1)  # (S*P,)
            hs = (base_size * self.scales[:, None] * h_ratios[None, :]).reshape(-1)  # (S*P,)
        cx = cy = self.center_offset * base_size
        return torch.stack([cx - 0.5 * ws, cy - 0.5 * hs, cx + 0.5 * ws, cy + 0.5 * hs], dim=-1)

    def grid_priors(
        self,
        featmap_sizes: FeatmapSizes,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> list[Tensor]:
        """Anchors of every level: L x (H_l * W_l * A_l, 4).

        Cached per (sizes, device, dtype): a repeated call returns the same list object, so
        callers must not modify the tensors in place.
        """
        sizes = tuple((int(h), int(w)) for h, w in featmap_sizes)
        if len(sizes) != self.num_levels:
            raise ValueError(
                f"got {len(sizes)} feature map sizes for {self.num_levels} anchor levels")
        device = torch.device(device)
        key = (sizes, str(device), dtype)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        priors = [self.single_level_grid_priors(size, level, device).to(dtype)
                  for level, size in enumerate(sizes)]
        self._cache[key] = priors
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return priors

    def single_level_grid_priors(self, featmap_size: tuple[Any, Any], level: int,
                                 device: torch.device | str = "cpu") -> Tensor:
        """Level ``level``'s anchors (H_l * W_l * A_l, 4) float32, not cached; the sizes may be
        symbolic (traced by the ONNX export): base anchors (A, 4) shifted by ``(x * stride_w,
        y * stride_h)``, rows (y, x, anchor)."""
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level]
        base = self.base_anchors[level].to(device)  # (A, 4)
        shift_x = torch.arange(feat_w, device=device, dtype=torch.float32) * stride_w  # (W,)
        shift_y = torch.arange(feat_h, device=device, dtype=torch.float32) * stride_h  # (H,)
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")  # (H, W) each, y outer
        shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
        return (shifts + base[None]).reshape(-1, 4)  # (H*W, A, 4) -> (H*W*A, 4)

    def valid_flags(
        self,
        featmap_sizes: FeatmapSizes,
        pad_shapes: Tensor,
    ) -> list[Tensor]:
        """Which anchors sit on a location inside each image: L x (N, H_l * W_l * A_l) bool.

        ``pad_shapes`` is (N, 2) int (h, w) per image: MMDetection passes each image's own
        ``pad_shape`` (its size after size-divisor padding, before the batch is padded to one
        size). A location (y, x) of level l is valid when ``y < ceil(h / stride_h)`` and
        ``x < ceil(w / stride_w)``.
        """
        pad_shapes = torch.as_tensor(pad_shapes).long()  # (N, 2)
        device = pad_shapes.device
        flags = []
        for level, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride_w, stride_h = self.strides[level]
            valid_h = (pad_shapes[:, 0] + stride_h - 1) // stride_h  # (N,) ceil(h / stride_h)
            valid_w = (pad_shapes[:, 1] + stride_w - 1) // stride_w  # (N,)
            rows = torch.arange(feat_h, device=device)[None, :, None] < valid_h[:, None, None]
            cols = torch.arange(feat_w, device=device)[None, None, :] < valid_w[:, None, None]
            inside = rows & cols  # (N, H, W)
            per_anchor = inside[..., None].expand(-1, -1, -1, self.num_base_priors[level])
            flags.append(per_anchor.reshape(inside.shape[0], -1))  # (N, H, W, A) -> (N, H*W*A)
        return flags


def anchor_inside_flags(
    priors: Tensor,
    valid_flags: Tensor,
    img_shapes: Tensor,
    allowed_border: float = 0,
) -> Tensor:
    """MMDetection's ``anchor_inside_flags``: valid and, when ``allowed_border >= 0``, within
    ``allowed_border`` pixels of the image. priors (R, 4), valid_flags (N, R), img_shapes (N, 2)
    of (h, w) -> (N, R) bool. ``allowed_border = -1`` (RetinaNet) keeps ``valid_flags`` as is.
    """
    if allowed_border < 0:
        return valid_flags
    img_h = img_shapes[:, 0:1].to(priors)  # (N, 1)
    img_w = img_shapes[:, 1:2].to(priors)  # (N, 1)
    return (valid_flags
            & (priors[None, :, 0] >= -allowed_border)
            & (priors[None, :, 1] >= -allowed_border)
            & (priors[None, :, 2] < img_w + allowed_border)
            & (priors[None, :, 3] < img_h + allowed_border))
