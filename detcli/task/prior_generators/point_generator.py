"""Grid points for anchor-free dense heads (FCOS), as MMDetection 2.x's ``MlvlPointGenerator``.

L levels; level l has a feature map of H_l x W_l locations and one point per location; R_l =
H_l * W_l points on level l.

Layout (what the head's outputs line up with):

- the point of location (y, x) on level l is ``((x + offset) * stride_w, (y + offset) * stride_h)``:
  with the default ``offset = 0.5`` it is the centre of the stride cell, where a stride-s conv
  output "looks" (``offset = 0`` gives the cell's top-left corner, as anchors have);
- ``grid_priors`` returns, per level, (R_l, 2) points ``(x, y)`` (or (R_l, 4) ``(x, y,
  stride_w, stride_h)`` with ``with_stride``), locations row-major (y outer, x inner): row
  ``y * W_l + x``. This matches a head output permuted ``(N, C, H, W) -> (N, H, W, C) ->
  (N, H*W, C)``, as :func:`~detcli.models.dense_heads.anchor_head.flatten_levels` does.

Points are computed in float32 and cast to the requested dtype last.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Annotated, Any, ClassVar, Literal, Sequence, Union

import torch
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.registry import PRIOR_GENERATORS

PositiveInt = Annotated[int, Field(gt=0)]
Stride = Union[PositiveInt, tuple[PositiveInt, PositiveInt]]
FeatmapSizes = Sequence[tuple[int, int]]

_CACHE_SIZE = 8  # distinct (sizes, device, dtype, with_stride) keys kept


class MlvlPointGeneratorConfig(Schema):
    """MMDetection's ``MlvlPointGenerator`` settings."""

    type: Literal["MlvlPointGenerator"] = "MlvlPointGenerator"
    strides: list[Stride] = Field(min_length=1)  # per level: s, or [s_w, s_h]
    offset: float = Field(0.5, ge=0, le=1)  # position of the point in its stride cell


@PRIOR_GENERATORS.register(MlvlPointGeneratorConfig)
class MlvlPointGenerator:
    """One point per location of every level; see the module docstring for the layout.
    A :class:`~detcli.task.protocols.PriorGenerator` of points."""

    priors_are_points: ClassVar[bool] = True

    def __init__(self, *, strides: Sequence[Union[int, Sequence[int]]],
                 offset: float = 0.5) -> None:
        # (stride_w, stride_h) per level, as MMDetection's _pair
        self.strides = [(int(s), int(s)) if isinstance(s, (int, float))
                        else (int(s[0]), int(s[1])) for s in strides]
        self.offset = float(offset)
        self._cache: OrderedDict[tuple, list[Tensor]] = OrderedDict()

    def __repr__(self) -> str:
        return f"MlvlPointGenerator(strides={self.strides}, offset={self.offset})"

    @property
    def num_levels(self) -> int:
        return len(self.strides)

    @property
    def num_base_priors(self) -> list[int]:
        """One point per location on every level."""
        return [1] * self.num_levels

    def grid_priors(
        self,
        featmap_sizes: FeatmapSizes,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        with_stride: bool = False,
    ) -> list[Tensor]:
        """Points of every level: L x (R_l, 2) ``(x, y)``, or L x (R_l, 4) ``(x, y, s_w, s_h)``.

        Cached per (sizes, device, dtype, with_stride): a repeated call returns the same list
        object, so callers must not modify the tensors in place.
        """
        sizes = tuple((int(h), int(w)) for h, w in featmap_sizes)
        if len(sizes) != self.num_levels:
            raise ValueError(
                f"got {len(sizes)} feature map sizes for {self.num_levels} point levels "
                f"(strides {self.strides})")
        device = torch.device(device)
        key = (sizes, str(device), dtype, with_stride)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        points = [self.single_level_grid_priors(size, level, device, with_stride).to(dtype)
                  for level, size in enumerate(sizes)]
        self._cache[key] = points
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return points

    def single_level_grid_priors(self, featmap_size: tuple[Any, Any], level: int,
                                 device: torch.device | str = "cpu",
                                 with_stride: bool = False) -> Tensor:
        """Level ``level``'s points, (H_l*W_l, 2) or (H_l*W_l, 4) float32 (not cached)."""
        feat_h, feat_w = featmap_size
        stride_w, stride_h = self.strides[level]
        cols = torch.arange(feat_w, device=device, dtype=torch.float32)  # (W_l,)
        rows = torch.arange(feat_h, device=device, dtype=torch.float32)  # (H_l,)
        shift_x = (cols + self.offset) * stride_w  # (W_l,)
        shift_y = (rows + self.offset) * stride_h  # (H_l,)
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")  # (H_l, W_l) each, y outer
        columns = [xx.reshape(-1), yy.reshape(-1)]  # (H_l*W_l,) each
        if with_stride:
            columns += [torch.full_like(columns[0], stride_w),
                        torch.full_like(columns[0], stride_h)]
        return torch.stack(columns, dim=-1)  # (H_l*W_l, 2 or 4)

    def valid_flags(self, featmap_sizes: FeatmapSizes, pad_shapes: Tensor) -> list[Tensor]:
        """Which points sit on a location inside each image: L x (N, R_l) bool.

        ``pad_shapes`` is (N, 2) int (h, w) per image; location (y, x) of level l is valid when
        ``y < ceil(h / stride_h)`` and ``x < ceil(w / stride_w)`` (as the anchor generator's).
        """
        pad_shapes = torch.as_tensor(pad_shapes).long()  # (N, 2)
        device = pad_shapes.device
        flags = []
        for level, (feat_h, feat_w) in enumerate(featmap_sizes):
            stride_w, stride_h = self.strides[level]
            valid_h = (pad_shapes[:, 0] + stride_h - 1) // stride_h  # (N,)
            valid_w = (pad_shapes[:, 1] + stride_w - 1) // stride_w  # (N,)
            rows = torch.arange(feat_h, device=device)[None, :, None] < valid_h[:, None, None]
            cols = torch.arange(feat_w, device=device)[None, None, :] < valid_w[:, None, None]
            inside = rows & cols  # (N, H, W)
            flags.append(inside.reshape(inside.shape[0], -1))  # (N, H, W) -> (N, H*W)
        return flags
