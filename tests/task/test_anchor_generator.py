"""Anchor generation against written-out coordinates and MMDetection 2.x's layout."""

import math

import pytest
import torch
from pydantic import ValidationError

from detcli.registry import PRIOR_GENERATORS
from detcli.task.prior_generators import AnchorGenerator, AnchorGeneratorConfig, anchor_inside_flags

# stride 8, base size 8, scale 4 (one octave scale): anchors 32 px on a side for ratio 1;
# ratio 0.5 (h/w): w = 32 / sqrt(0.5) = 45.254834, h = 32 * sqrt(0.5) = 22.627417
HW, HH = 22.627417, 11.3137085  # half sides of the ratio-0.5 anchor
BASE = [
    [-HW, -HH, HW, HH],            # ratio 0.5
    [-16.0, -16.0, 16.0, 16.0],    # ratio 1
    [-HH, -HW, HH, HW],            # ratio 2
]


def _shift(anchor, dx, dy):
    x1, y1, x2, y2 = anchor
    return [x1 + dx, y1 + dy, x2 + dx, y2 + dy]


def test_one_level_written_out():
    gen = AnchorGenerator(strides=[8], ratios=[0.5, 1.0, 2.0], octave_base_scale=4,
                          scales_per_octave=1)
    (anchors,) = gen.grid_priors([(2, 2)])
    # locations row-major (y, x) = (0,0), (0,1), (1,0), (1,1); three anchors each
    expected = torch.tensor([
        _shift(BASE[0], 0, 0), _shift(BASE[1], 0, 0), _shift(BASE[2], 0, 0),
        _shift(BASE[0], 8, 0), _shift(BASE[1], 8, 0), _shift(BASE[2], 8, 0),
        _shift(BASE[0], 0, 8), _shift(BASE[1], 0, 8), _shift(BASE[2], 0, 8),
        _shift(BASE[0], 8, 8), _shift(BASE[1], 8, 8), _shift(BASE[2], 8, 8),
    ])
    assert anchors.shape == (12, 4)
    assert torch.allclose(anchors, expected, atol=1e-5)
    assert anchors[4].tolist() == [-8.0, -16.0, 24.0, 16.0]  # (y=0, x=1), ratio 1


def test_mmdetection_docstring_example():
    # MMDetection's AnchorGenerator docstring: strides [16], ratios [1], scales [1], base 9
    gen = AnchorGenerator(strides=[16], ratios=[1.0], scales=[1.0], base_sizes=[9])
    (anchors,) = gen.grid_priors([(2, 2)])
    assert anchors.tolist() == [[-4.5, -4.5, 4.5, 4.5], [11.5, -4.5, 20.5, 4.5],
                                [-4.5, 11.5, 4.5, 20.5], [11.5, 11.5, 20.5, 20.5]]


def test_scale_major_order_non_square_stride_and_center_offset():
    gen = AnchorGenerator(strides=[[8, 16]], ratios=[1.0, 4.0], scales=[1.0, 2.0],
                          center_offset=0.5)
    # base size = min(8, 16) = 8, centred on (4, 4); scale_major: ratio outer, scale inner
    widths = (gen.base_anchors[0][:, 2] - gen.base_anchors[0][:, 0]).tolist()
    assert widths == pytest.approx([8.0, 16.0, 4.0, 8.0])  # (r1,s1) (r1,s2) (r4,s1) (r4,s2)
    assert gen.base_anchors[0][0].tolist() == [0.0, 0.0, 8.0, 8.0]
    (anchors,) = gen.grid_priors([(2, 2)])
    # location (y=1, x=1) is shifted by (stride_w, stride_h) = (8, 16)
    assert anchors[3 * 4].tolist() == [8.0, 16.0, 16.0, 24.0]
    flipped = AnchorGenerator(strides=[8], ratios=[1.0, 4.0], scales=[1.0, 2.0], scale_major=False)
    widths = (flipped.base_anchors[0][:, 2] - flipped.base_anchors[0][:, 0]).tolist()
    assert widths == pytest.approx([8.0, 4.0, 16.0, 8.0])  # (s1,r1) (s1,r4) (s2,r1) (s2,r4)


def test_layout_matches_head_permute():
    """Row (y * W + x) * A + a is base anchor a shifted to location (y, x)."""
    gen = AnchorGenerator(strides=[4], ratios=[0.5, 1.0], scales=[1.0, 2.0])
    h, w, a = 3, 5, 4
    (anchors,) = gen.grid_priors([(h, w)])
    for y in range(h):
        for x in range(w):
            for k in range(a):
                expected = gen.base_anchors[0][k] + torch.tensor([4.0 * x, 4.0 * y] * 2)
                assert torch.equal(anchors[(y * w + x) * a + k], expected)


def test_retinanet_preset():
    cfg = AnchorGeneratorConfig(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0],
                                octave_base_scale=4, scales_per_octave=3)
    gen = PRIOR_GENERATORS.build(cfg)
    assert gen.num_levels == 5
    assert gen.num_base_priors == [9, 9, 9, 9, 9]
    assert gen.scales.tolist() == pytest.approx([4.0, 5.039684, 6.349604])
    # level 5, ratio 1 (p = 1), scale 4 (s = 0): a = 1 * 3 + 0, 128 * 4 = 512 px
    assert gen.base_anchors[4][3].tolist() == [-256.0, -256.0, 256.0, 256.0]
    assert gen.base_anchors[4][5, 2].item() * 2 == pytest.approx(128 * 4 * 2 ** (2 / 3), rel=1e-6)
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    priors = gen.grid_priors(sizes)
    assert [p.shape[0] for p in priors] == [576, 144, 36, 9, 9]


def test_grid_priors_cached_per_sizes_device_dtype():
    gen = AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1.0])
    first = gen.grid_priors([(4, 4), (2, 2)])
    assert gen.grid_priors([(4, 4), (2, 2)]) is first
    assert gen.grid_priors([(4, 4), (2, 2)], device="cpu") is first
    half = gen.grid_priors([(4, 4), (2, 2)], dtype=torch.float16)
    assert half is not first and half[0].dtype == torch.float16
    assert gen.grid_priors([(4, 4), (1, 1)]) is not first
    with pytest.raises(ValueError, match="1 feature map sizes for 2 anchor levels"):
        gen.grid_priors([(4, 4)])


def test_valid_flags_and_inside_flags():
    gen = AnchorGenerator(strides=[8], ratios=[1.0], scales=[1.0])
    pad_shapes = torch.tensor([[16, 16], [9, 20]])  # image 0 covers 2x2 locations, image 1 2x3
    (flags,) = gen.valid_flags([(2, 3)], pad_shapes)
    assert flags.tolist() == [[True, True, False, True, True, False], [True] * 6]
    (priors,) = gen.grid_priors([(2, 3)])  # 8 px anchors centred on (8x, 8y)
    inside = anchor_inside_flags(priors, flags, torch.tensor([[16, 16], [16, 16]]), 0)
    # only an anchor fully inside (x1 >= 0, y1 >= 0, x2 < 16, y2 < 16): location (1, 1)
    assert inside.tolist() == [[False, False, False, False, True, False],
                               [False, False, False, False, True, False]]
    assert anchor_inside_flags(priors, flags, pad_shapes, -1) is flags


def test_config_needs_exactly_one_way_to_scale():
    base = dict(strides=[8], ratios=[1.0])
    with pytest.raises(ValidationError, match="exactly one of"):
        AnchorGeneratorConfig(**base, scales=[1.0], octave_base_scale=4, scales_per_octave=3)
    with pytest.raises(ValidationError, match="exactly one of"):
        AnchorGeneratorConfig(**base)
    with pytest.raises(ValidationError, match="got only octave_base_scale"):
        AnchorGeneratorConfig(**base, octave_base_scale=4)
    with pytest.raises(ValidationError, match="one base size per level"):
        AnchorGeneratorConfig(**base, scales=[1.0], base_sizes=[8, 16])
    with pytest.raises(ValidationError):
        AnchorGeneratorConfig(strides=[8], ratios=[-1.0], scales=[1.0])
    cfg = AnchorGeneratorConfig(**base, scales=[1.0], octave_base_scale=False,
                                scales_per_octave=False)  # TOML false = off
    assert cfg.octave_base_scale is None
    assert math.isclose(PRIOR_GENERATORS.build(cfg).scales.item(), 1.0)


def test_the_config_rejects_mixed_or_partial_scales():
    """Checked once, by the config model every generator is built from (not the class)."""
    with pytest.raises(ValidationError, match="exactly one of"):
        AnchorGeneratorConfig(strides=[8], ratios=[1.0], scales=[1.0], octave_base_scale=4,
                              scales_per_octave=3)
    with pytest.raises(ValidationError, match="exactly one of"):
        AnchorGeneratorConfig(strides=[8], ratios=[1.0])
    with pytest.raises(ValidationError, match="go together"):
        AnchorGeneratorConfig(strides=[8], ratios=[1.0], octave_base_scale=4)
    with pytest.raises(ValidationError, match="finite"):
        AnchorGeneratorConfig(strides=[8], ratios=[float("inf")], scales=[1.0])
