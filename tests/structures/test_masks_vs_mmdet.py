"""detcli's mask structures against MMDetection 3.3's on the same inputs (committed fixture,
written by tests/structures/fixtures/make_mmdet_masks.py): every pixel equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.structures.masks import BitmapMasks, PolygonMasks, crop_and_resize

FIXTURE = np.load(Path(__file__).parent / "fixtures" / "mmdet_masks.npz")
CROP = np.array([10, 8, 40, 30])


def polygons() -> PolygonMasks:
    t = np.arange(40) * 2 * np.pi / 40
    ellipse = np.stack([24.3 + 15.2 * np.cos(t), 19.6 + 11.1 * np.sin(t)], 1).reshape(-1)
    return PolygonMasks([[ellipse], [np.array([5.2, 33.7, 20.9, 4.4, 31.6, 36.1])]], 40, 50)


def test_mask_targets_equal_mmdetection_crop_and_resize():
    out = crop_and_resize(torch.from_numpy(FIXTURE["masks"]), torch.from_numpy(FIXTURE["boxes"]),
                          torch.from_numpy(FIXTURE["inds"]), (28, 28))
    assert out.shape == (30, 28, 28)
    np.testing.assert_array_equal(out.numpy().astype(np.uint8), FIXTURE["crop_and_resize"])


@pytest.mark.parametrize("name, op", [
    ("poly_raster", lambda p: p),
    ("poly_flip_horizontal", lambda p: p.flip("horizontal")),
    ("poly_flip_vertical", lambda p: p.flip("vertical")),
    ("poly_flip_diagonal", lambda p: p.flip("diagonal")),
    ("poly_resize", lambda p: p.resize((23, 31))),
    ("poly_crop", lambda p: p.crop(CROP)),
    ("poly_pad", lambda p: p.pad((48, 64))),
    ("bitmap_resize", lambda p: p.to_bitmap().resize((23, 31))),
    ("bitmap_crop", lambda p: p.to_bitmap().crop(CROP)),
    ("bitmap_pad", lambda p: p.to_bitmap().pad((48, 64))),
])
def test_geometry_equals_mmdetection(name, op):
    np.testing.assert_array_equal(op(polygons()).to_bitmap().masks, FIXTURE[name])
    assert isinstance(op(polygons()).to_bitmap(), BitmapMasks)
