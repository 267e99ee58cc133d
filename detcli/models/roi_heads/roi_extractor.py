"""RoI feature extraction: each RoI pooled by RoIAlign from the one FPN level its size picks.

R RoIs (of the whole batch), L levels used (``len(featmap_strides)``), C channels, S x S the
pooled size (``roi_layer.output_size``; (S_h, S_w) when given as a pair), N images.

RoIs are ``(R, 5)`` rows ``[batch_index, x1, y1, x2, y2]`` in network-input pixels (MMDetection's
``bbox2roi`` layout). The level of a RoI follows MMDetection 2.x's ``SingleRoIExtractor``
(the FPN paper's eq. 1 with a canonical size of ``finest_scale``)::

    scale = sqrt(w * h)                                       # w = x2 - x1, h = y2 - y1
    level = clamp(floor(log2(scale / finest_scale + 1e-6)), 0, L - 1)

so with ``finest_scale = 56`` a RoI smaller than 112 x 112 reads the stride-4 map, up to
224 x 224 the stride-8 one, and so on. Pooling is ``torchvision.ops.roi_align`` with
``spatial_scale = 1 / stride``; ``aligned = true`` (MMCV's default) shifts the sampling grid
by half a pixel, as MMCV's RoIAlign does.

Two paths with equal results (RoIAlign of one RoI does not depend on the others):

- eager (training, prediction): RoIs are grouped by level and each level pools only its own
  RoIs; the group sizes need one host sync per call.
- dense (ONNX export, or ``dense=True``): every level pools every RoI and a level mask picks
  the result -- L times the pooling work, but fixed shapes and no data-dependent indexing.

Pooling runs in float32 (or float64) whatever the feature dtype, so box coordinates keep their
precision under AMP; the output has the feature dtype.
"""

from __future__ import annotations

from typing import Literal, Sequence, Union

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn
from torchvision.ops import roi_align

from detcli.config.schema import Schema
from detcli.errors import DetError
from detcli.registry import ROI_EXTRACTORS

LEVEL_EPS = 1e-6  # MMDetection's: a RoI of exactly 2^k * finest_scale goes to level k
NO_MAX_POOL = ("RoIAlign pool_mode = \"max\" is not supported (torchvision's roi_align averages "
               "its samples); use pool_mode = \"avg\"")


def map_roi_levels(boxes: Tensor, num_levels: int, finest_scale: float = 56) -> Tensor:
    """The FPN level of each RoI: boxes (R, 4) x1y1x2y2 -> (R,) int64 in [0, num_levels - 1].

    See the module docstring for the rule. Degenerate boxes (zero or negative area) go to
    level 0.
    """
    boxes = boxes.float()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # (R,)
    scale = area.clamp(min=0).sqrt()  # (R,)
    levels = torch.floor(torch.log2(scale / finest_scale + LEVEL_EPS))  # (R,)
    return levels.clamp(min=0, max=num_levels - 1).long()  # (R,)


def _pair(size: Union[int, Sequence[int]]) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


class RoIAlignConfig(Schema):
    """MMCV's ``roi_layer`` (``RoIAlign``); a nested setting of the extractor, not a registry."""

    type: Literal["RoIAlign"] = "RoIAlign"
    output_size: Union[int, tuple[int, int]] = 7  # S, or (S_h, S_w)
    sampling_ratio: int = Field(0, ge=0)  # samples per bin side; 0: adaptive ceil(roi / S)
    aligned: bool = True  # half-pixel shift of the sampling grid (MMCV's default)
    pool_mode: str = "avg"

    @field_validator("output_size")
    @classmethod
    def _positive_size(cls, value: Union[int, tuple[int, int]]) -> Union[int, tuple[int, int]]:
        if min(_pair(value)) <= 0:
            raise ValueError(f"output_size must be positive, got {value}")
        return value

    @field_validator("pool_mode")
    @classmethod
    def _avg_only(cls, value: str) -> str:
        if value != "avg":
            raise ValueError(NO_MAX_POOL if value == "max" else
                             f"RoIAlign pool_mode must be \"avg\", got {value!r}")
        return value

    @property
    def output_pair(self) -> tuple[int, int]:
        """(S_h, S_w) whichever form the config uses."""
        return _pair(self.output_size)


class SingleRoIExtractorConfig(Schema):
    type: Literal["SingleRoIExtractor"] = "SingleRoIExtractor"
    roi_layer: RoIAlignConfig = Field(default_factory=RoIAlignConfig)
    out_channels: int | None = Field(None, ge=1)  # derived from the neck; set it only to assert it
    featmap_strides: list[int] = Field(min_length=1)  # strides of the feature maps used, in order
    finest_scale: int = Field(56, gt=0)  # RoIs below 2 * finest_scale read the first map

    @field_validator("featmap_strides")
    @classmethod
    def _positive_strides(cls, value: list[int]) -> list[int]:
        if any(stride <= 0 for stride in value):
            raise ValueError(f"featmap_strides must all be > 0, got {value}")
        return value


def check_pooled_size(extractor: Schema, head: Schema, extractor_key: str, head_key: str,
                      readers: str) -> None:
    """A head config's ``roi_feat_size`` must be the S x S its extractor pools: ValueError
    naming both keys (``model.roi_head.<head_key>``, ``model.roi_head.<extractor_key>``) and
    why (``readers``: "the box head reads"). Nothing to check when either has no such field."""
    roi_layer = getattr(extractor, "roi_layer", None)
    pooled = getattr(roi_layer, "output_pair", None)
    feat_size = getattr(head, "roi_feat_size", None)
    if pooled is not None and feat_size is not None and tuple(pooled) != (feat_size,) * 2:
        raise ValueError(
            f"model.roi_head.{head_key}.roi_feat_size = {feat_size} disagrees with "
            f"model.roi_head.{extractor_key}.roi_layer.output_size = "
            f"{roi_layer.output_size}: {readers} the pooled RoI features, so set both to the "
            "same size")


@ROI_EXTRACTORS.register(SingleRoIExtractorConfig)
class SingleRoIExtractor(nn.Module):
    """``forward(feats, rois)``: L x (N, C, H_l, W_l), (R, 5) -> (R, C, S_h, S_w).

    No parameters. ``roi_layer`` (default: RoIAlign 7 x 7, adaptive sampling, aligned) gives
    ``output_size`` (S_h, S_w), ``sampling_ratio`` and ``aligned``; ``out_channels`` records C
    (the neck's channels, connected when the detector's config resolved) for the box head.
    """

    def __init__(
        self,
        *,
        featmap_strides: Sequence[int],
        roi_layer: RoIAlignConfig | None = None,
        out_channels: int | None = None,
        finest_scale: float = 56,
    ) -> None:
        super().__init__()
        roi_layer = roi_layer if roi_layer is not None else RoIAlignConfig()
        self.featmap_strides = [int(s) for s in featmap_strides]
        self.output_size = roi_layer.output_pair
        self.sampling_ratio = roi_layer.sampling_ratio
        self.aligned = roi_layer.aligned
        self.out_channels = out_channels
        self.finest_scale = finest_scale

    @property
    def num_inputs(self) -> int:
        """L: how many feature maps (the first ones) the extractor reads."""
        return len(self.featmap_strides)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, featmap_strides={self.featmap_strides}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, "
                f"finest_scale={self.finest_scale}")

    def _pool(self, feat: Tensor, rois: Tensor, level: int) -> Tensor:
        """RoIAlign of rois (R', 5) on one level's map (N, C, H, W) -> (R', C, S_h, S_w), in
        the rois' dtype."""
        scale = 1.0 / self.featmap_strides[level]
        return roi_align(feat.to(rois.dtype), rois, self.output_size, spatial_scale=scale,
                         sampling_ratio=self.sampling_ratio, aligned=self.aligned)

    def forward(self, feats: Sequence[Tensor], rois: Tensor, dense: bool | None = None) -> Tensor:
        """feats: at least L maps (N, C, H_l, W_l); rois (R, 5) -> (R, C, S_h, S_w).

        ``dense``: None picks the dense path while exporting (``torch.compiler.is_exporting()``
        or TorchScript tracing) and the eager one otherwise; True or False forces one.
        """
        num_levels = self.num_inputs
        if len(feats) < num_levels:
            raise DetError(f"SingleRoIExtractor reads {num_levels} feature maps "
                           f"(featmap_strides {self.featmap_strides}) but got {len(feats)}")
        feats = list(feats[:num_levels])
        out_dtype = feats[0].dtype
        # roi_align needs rois and features of one dtype; half/bf16 boxes would lose pixels, so
        # each level is pooled in float32 (see _pool)
        rois = rois.to(torch.float64 if out_dtype == torch.float64 else torch.float32)
        levels = map_roi_levels(rois[:, 1:], num_levels, self.finest_scale)  # (R,)
        if dense is None:
            dense = torch.compiler.is_exporting() or torch.jit.is_tracing()
        if dense:
            pooled = self._forward_dense(feats, rois, levels)
        else:
            pooled = self._forward_eager(feats, rois, levels)
        return pooled.to(out_dtype)  # (R, C, S_h, S_w)

    def _forward_dense(self, feats: list[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
        """Every level pools every RoI; the RoI's own level is kept. Fixed shapes."""
        out = None
        for level, feat in enumerate(feats):
            pooled = self._pool(feat, rois, level)  # (R, C, S_h, S_w)
            if out is None:
                out = pooled
            else:
                mine = (levels == level)[:, None, None, None]  # (R, 1, 1, 1)
                out = torch.where(mine, pooled, out)
        assert out is not None
        return out

    def _forward_eager(self, feats: list[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
        """RoIs sorted by level; each level pools its own run straight into its RoIs' rows
        (every row is written once: no zero fill, no concatenation)."""
        num_rois = rois.shape[0]
        channels = feats[0].shape[1]
        order = torch.sort(levels, stable=True).indices  # (R,) RoIs grouped by level
        # one host sync (unavoidable): the size of each level's group is data-dependent
        # (scatter_add, not bincount: bincount reads the largest level back first on CUDA)
        counts = torch.zeros(len(feats), dtype=torch.long, device=levels.device).scatter_add_(
            0, levels, torch.ones_like(levels)).tolist()  # L x RoIs of level l
        sorted_rois = rois[order]  # (R, 5)
        out = rois.new_empty(num_rois, channels, *self.output_size)  # (R, C, S_h, S_w)
        start = 0
        for level, (feat, count) in enumerate(zip(feats, counts)):
            if count > 0:
                run = slice(start, start + count)
                out.index_copy_(0, order[run], self._pool(feat, sorted_rois[run], level))
            start += count
        return out
