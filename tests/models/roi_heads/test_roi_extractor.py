"""SingleRoIExtractor: the level rule, a hand-computed RoIAlign, torchvision per level, the
eager and dense paths, batch indices, dtypes and configs.

Level rule (finest_scale 56, 4 levels): level = floor(log2(sqrt(w * h) / 56 + 1e-6)), clamped:
  56 -> log2(1) = 0;  111 -> log2(1.98) = 0.99 -> 0;  112 -> log2(2) = 1;  224 -> 2;  448 -> 3;
  1000 -> log2(17.9) = 4.2 -> 4, clamped to 3;  10 -> log2(0.18) < 0 -> 0;
  32 x 392: sqrt(12544) = 112 -> 1.
The 1e-6 absorbs rounding just below a boundary: 112 x 111.9999 (scale / 56 = 1.9999991) -> 1,
while 112 x 111.99 (1.9999107) -> 0.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torchvision.ops import roi_align

from detcli.config.loader import load_config
from detcli.errors import ConfigError, DetError
from detcli.models.roi_heads import (
    RoIAlignConfig,
    SingleRoIExtractor,
    Shared2FCBBoxHeadConfig,
    SingleRoIExtractorConfig,
    StandardRoIHeadConfig,
    map_roi_levels,
)
from detcli.registry import ROI_EXTRACTORS

STRIDES = [4, 8, 16, 32]


def square(x: float, y: float, size: float) -> list[float]:
    return [x, y, x + size, y + size]


def pyramid(num_images: int = 2, channels: int = 3, size: int = 256) -> list[torch.Tensor]:
    """Random maps of a size x size input at strides 4..32, plus a stride-64 map never read."""
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(num_images, channels, size // s, size // s, generator=gen)
            for s in STRIDES + [64]]


def test_map_roi_levels_by_hand() -> None:
    boxes = torch.tensor([
        square(0, 0, 56), square(3, 4, 111), square(0, 0, 112), square(10, 0, 224),
        square(0, 0, 448), square(0, 0, 1000), square(5, 5, 10), [0, 0, 32, 392],
        [4, 4, 4, 4],  # empty box: level 0, no NaN
        [0, 0, 112, 111.9999], [0, 0, 112, 111.99],
    ])
    assert map_roi_levels(boxes, 4).tolist() == [0, 0, 1, 2, 3, 3, 0, 1, 0, 1, 0]
    assert map_roi_levels(boxes, 4).dtype == torch.int64
    # a coarser canonical scale moves every box down; 2 levels clamp at 1
    assert map_roi_levels(boxes, 2, finest_scale=112).tolist() == [0, 0, 0, 1, 1, 1, 0, 0, 0,
                                                                   0, 0]


def test_roi_align_of_a_ramp_by_hand() -> None:
    # feature value = its column index x (stride 4). RoI [8, 8, 36, 36] (28 px: level 0) covers
    # feature coords 2..9, minus 0.5 with aligned = true: 1.5..8.5, so 7 bins of width 1 with
    # centres 2, 3, ..., 8; one sample per bin (adaptive: ceil(7 / 7)) at the bin centre, where
    # bilinear interpolation of a linear ramp is exact: output column j = j + 2, on every row.
    ramp = torch.arange(16.0).expand(1, 1, 16, 16).contiguous()  # (1, 1, 16, 16)
    others = [torch.zeros(1, 1, 16 >> k, 16 >> k) for k in (1, 2, 3)]
    extractor = SingleRoIExtractor(featmap_strides=STRIDES)
    out = extractor([ramp] + others, torch.tensor([[0.0, 8.0, 8.0, 36.0, 36.0]]))
    assert out.shape == (1, 1, 7, 7)
    expected = torch.arange(2.0, 9.0).expand(7, 7)
    assert torch.allclose(out[0, 0], expected, atol=1e-5)
    # aligned = false samples without the half-pixel shift: centres 2.5 .. 8.5
    legacy = SingleRoIExtractor(featmap_strides=STRIDES, roi_layer=RoIAlignConfig(aligned=False))
    out = legacy([ramp] + others, torch.tensor([[0.0, 8.0, 8.0, 36.0, 36.0]]))
    assert torch.allclose(out[0, 0], expected + 0.5, atol=1e-5)


def test_each_roi_pooled_from_its_level_and_image() -> None:
    feats = pyramid()
    # one RoI per level (sides 40, 150, 300, 600 -> levels 0, 1, 2, 3), alternating images
    rois = torch.tensor([[0.0] + square(10, 20, 40), [1.0] + square(5, 5, 150),
                         [0.0] + square(0, 30, 300), [1.0] + square(-100, -50, 600),
                         [1.0] + square(10, 20, 40)])
    levels = [0, 1, 2, 3, 0]
    extractor = SingleRoIExtractor(featmap_strides=STRIDES,
                                   roi_layer=RoIAlignConfig(sampling_ratio=2))
    out = extractor(feats, rois)  # (5, 3, 7, 7)
    assert out.shape == (5, 3, 7, 7)
    for i, level in enumerate(levels):
        image = int(rois[i, 0])
        alone = rois[i:i + 1].clone()
        alone[0, 0] = 0  # the image's map alone: batch index 0
        expected = roi_align(feats[level][image:image + 1], alone, (7, 7),
                             spatial_scale=1 / STRIDES[level], sampling_ratio=2, aligned=True)
        assert torch.allclose(out[i:i + 1], expected, atol=1e-6), i
    # the same box on the other image reads the other image's map
    assert not torch.allclose(out[0], out[4])


def test_dense_path_equals_eager_path() -> None:
    feats = pyramid()
    gen = torch.Generator().manual_seed(1)
    xy = torch.rand(60, 2, generator=gen) * 200
    sides = torch.exp(torch.rand(60, 2, generator=gen) * 5) * 6  # 6 .. 890 px
    boxes = torch.cat([xy, xy + sides], dim=1)
    rois = torch.cat([torch.randint(0, 2, (60, 1), generator=gen).float(), boxes], dim=1)
    assert set(map_roi_levels(boxes, 4).tolist()) == {0, 1, 2, 3}  # every level is used
    extractor = SingleRoIExtractor(featmap_strides=STRIDES,
                                   roi_layer=RoIAlignConfig(output_size=(7, 5)))
    eager = extractor(feats, rois, dense=False)
    dense = extractor(feats, rois, dense=True)
    assert eager.shape == (60, 3, 7, 5)
    assert torch.equal(eager, dense)


def test_zero_rois_and_gradients() -> None:
    feats = [f.requires_grad_() for f in pyramid()]
    extractor = SingleRoIExtractor(featmap_strides=STRIDES)
    for dense in (False, True):
        assert extractor(feats, torch.zeros(0, 5), dense=dense).shape == (0, 3, 7, 7)
    out = extractor(feats, torch.tensor([[1.0] + square(8, 8, 150)]))  # level 1, image 1
    out.sum().backward()
    assert feats[1].grad is not None and feats[1].grad[1].abs().sum() > 0
    assert feats[1].grad[0].abs().sum() == 0  # image 0 untouched
    assert feats[0].grad is None or feats[0].grad.abs().sum() == 0


def test_low_precision_features_keep_their_dtype() -> None:
    feats = pyramid()
    rois = torch.tensor([[0.0, 101.3, 57.9, 181.7, 140.2], [1.0, 3.0, 5.0, 250.0, 240.0]])
    extractor = SingleRoIExtractor(featmap_strides=STRIDES)
    reference = extractor(feats, rois)
    out = extractor([f.bfloat16() for f in feats], rois)
    assert out.dtype == torch.bfloat16
    # bf16 features, float32 boxes: only the features' rounding (~0.4%) shows
    assert torch.allclose(out.float(), reference, atol=0.03)


def test_config_build_and_checks() -> None:
    cfg = SingleRoIExtractorConfig(featmap_strides=STRIDES, out_channels=256,
                                   roi_layer=RoIAlignConfig(output_size=[7, 7], sampling_ratio=2))
    extractor = ROI_EXTRACTORS.build(cfg)
    assert isinstance(extractor, SingleRoIExtractor)
    assert extractor.num_inputs == 4 and extractor.out_channels == 256
    assert extractor.output_size == (7, 7) and extractor.sampling_ratio == 2
    assert ROI_EXTRACTORS.build(SingleRoIExtractorConfig(featmap_strides=[8])).out_channels is None
    # a configured out_channels is checked against the neck's when the RoI head connects
    roi = StandardRoIHeadConfig(bbox_roi_extractor=cfg, bbox_head=Shared2FCBBoxHeadConfig(
        num_classes=3))
    with pytest.raises(ValueError, match="out_channels = 256 disagrees with 128"):
        roi.connect(128, "model.neck (FPN out_channels 128)", "model.roi_head")
    with pytest.raises(ValidationError, match="pool_mode"):
        RoIAlignConfig(pool_mode="max")
    with pytest.raises(ValidationError, match="featmap_strides"):
        SingleRoIExtractorConfig(featmap_strides=[4, 0])
    with pytest.raises(ValidationError):
        SingleRoIExtractorConfig(featmap_strides=[])
    with pytest.raises(ValidationError):
        RoIAlignConfig(sampling_ratio=-1)
    with pytest.raises(DetError, match="reads 4 feature maps"):
        SingleRoIExtractor(featmap_strides=STRIDES)(pyramid()[:3], torch.zeros(0, 5))


def test_export_takes_the_dense_path() -> None:
    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.extractor = SingleRoIExtractor(featmap_strides=[4, 8])

        def forward(self, fine: torch.Tensor, coarse: torch.Tensor,
                    rois: torch.Tensor) -> torch.Tensor:
            return self.extractor([fine, coarse], rois)

    feats = pyramid(num_images=1, size=128)[:2]
    rois = torch.tensor([[0.0] + square(4, 4, 30), [0.0] + square(2, 2, 120)])  # levels 0, 1
    exported = torch.export.export(
        Wrapper(), (*feats, rois),
        dynamic_shapes=(None, None, {0: torch.export.Dim("rois", min=2, max=4096)}))
    ops = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert not any("bincount" in op or "sort" in op for op in ops)  # no data-dependent sizes
    more = torch.tensor([[0.0] + square(4, 4, 30), [0.0] + square(2, 2, 120),
                         [0.0] + square(50, 10, 60)])  # a RoI count other than the traced one
    assert torch.equal(exported.module()(*feats, more), Wrapper().extractor(feats, more))


@pytest.mark.parametrize("preset, override, message", [
    ("faster_rcnn_tiny_synth", "model.roi_head.bbox_head.roi_feat_size=5",
     "model.roi_head.bbox_head.roi_feat_size = 5 disagrees with model.roi_head."
     "bbox_roi_extractor.roi_layer.output_size = 7: the box head reads the pooled RoI features"),
    ("cascade_rcnn_tiny_synth", "model.roi_head.bbox_head.1.roi_feat_size=5",
     "model.roi_head.bbox_head[1].roi_feat_size = 5 disagrees with model.roi_head."
     "bbox_roi_extractor.roi_layer.output_size = 7: the box heads read the pooled RoI features"),
    ("mask_rcnn_tiny_synth", "model.roi_head.mask_head.roi_feat_size=7",
     "model.roi_head.mask_head.roi_feat_size = 7 disagrees with model.roi_head."
     "mask_roi_extractor.roi_layer.output_size = 14: the mask head reads the pooled RoI features"),
    ("cascade_mask_rcnn_tiny_synth", "model.roi_head.mask_roi_extractor.roi_layer.output_size=9",
     "model.roi_head.mask_head.roi_feat_size = 14 disagrees with model.roi_head."
     "mask_roi_extractor.roi_layer.output_size = 9: the mask heads read the pooled RoI features"),
])
def test_every_roi_head_checks_its_heads_read_the_pooled_size(preset, override, message):
    """One check (roi_extractor.check_pooled_size) for the box and mask heads of the standard
    and the cascade RoI heads: the message names both keys and their values."""
    with pytest.raises(ConfigError) as info:
        load_config(preset, [override])
    text = " ".join(str(info.value).split())
    assert message + ", so set both to the same size" in text
