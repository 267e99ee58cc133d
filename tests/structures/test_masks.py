"""Mask structures: polygon -> bitmap, every geometric operation on both kinds, mask targets.

Hand-computed cases on rectangles and a U shape with integer corners (exact), and ellipse /
triangle polygons where the two kinds may differ only along the boundary: pycocotools rounds
vertices to 1/5 pixel (not symmetric under a flip) and nearest-neighbour resizing is not
area-exact, so every differing pixel must lie within 1 pixel of the mask's boundary.
"""

from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from detcli.errors import DataError
from detcli.structures.masks import (
    BitmapMasks,
    PolygonMasks,
    clip_polygon,
    crop_and_resize,
    polygons_to_bitmap,
    rle_to_bitmap,
    segmentation_to_bitmap,
)

H, W = 10, 12
RECT = [2.0, 3.0, 7.0, 3.0, 7.0, 8.0, 2.0, 8.0]  # x in [2, 7], y in [3, 8]
U_SHAPE = [1.0, 1, 9, 1, 9, 9, 7, 9, 7, 3, 3, 3, 3, 9, 1, 9]  # concave, 8 vertices


def rect_bitmap(x1, y1, x2, y2, h=H, w=W):
    out = np.zeros((h, w), np.uint8)
    out[y1:y2, x1:x2] = 1
    return out


def ellipse_and_triangle(h=40, w=50):
    """Two instances whose vertices are not on the pixel grid."""
    t = np.arange(40) * 2 * np.pi / 40
    ellipse = np.stack([24.3 + 15.2 * np.cos(t), 19.6 + 11.1 * np.sin(t)], 1).reshape(-1)
    triangle = np.array([5.2, 33.7, 20.9, 4.4, 31.6, 36.1])
    return PolygonMasks([[ellipse], [triangle]], h, w)


def assert_boundary_only(a: np.ndarray, b: np.ndarray) -> None:
    """(G, H, W) masks equal but for pixels within 1 pixel of either one's boundary."""
    kernel = np.ones((3, 3), np.uint8)
    for x, y in zip(a, b):
        band = np.zeros_like(x, dtype=bool)
        for m in (x, y):
            band |= cv2.dilate(m, kernel) != cv2.erode(m, kernel)
        assert not ((x != y) & ~band).any()


def test_a_square_polygon_rasterises_to_its_pixels():
    """Pixel (x, y) is in when its centre (x + 0.5, y + 0.5) is inside: columns 2..6, rows 3..7."""
    bitmap = polygons_to_bitmap([np.array(RECT)], H, W)
    np.testing.assert_array_equal(bitmap, rect_bitmap(2, 3, 7, 8))
    masks = PolygonMasks([[RECT], [U_SHAPE]], H, W)
    assert masks.to_bitmap().masks.shape == (2, H, W) and masks.to_bitmap().masks.dtype == np.uint8
    np.testing.assert_array_equal(masks.areas, [25.0, 8 * 8 - 4 * 6])  # shoelace
    np.testing.assert_array_equal(masks.to_bitmap().areas, [25.0, 40.0])
    # a part of 2 points (4 numbers) is not read as a box: it is left out
    np.testing.assert_array_equal(polygons_to_bitmap([np.array([0.0, 0, 5, 5]), np.array(RECT)],
                                                     H, W), rect_bitmap(2, 3, 7, 8))


def test_rle_uncompressed_and_compressed_decode_and_a_wrong_size_is_an_error():
    expected = rect_bitmap(2, 3, 7, 8)
    compressed = mask_utils.encode(np.asfortranarray(expected))
    as_text = {"size": compressed["size"], "counts": compressed["counts"].decode("ascii")}
    np.testing.assert_array_equal(rle_to_bitmap(as_text, H, W), expected)
    # uncompressed: column-major run lengths from a zero run: columns 0-1 and rows 0-2 of
    # column 2 (23 zeros), then per column 2..6 five ones (rows 3-7) and five zeros (rows 8-9
    # and 0-2 of the next column), the last run being rows 8-9 of column 6 and columns 7-11
    runs = [23, 5, 5, 5, 5, 5, 5, 5, 5, 5, 52]
    assert sum(runs) == H * W
    np.testing.assert_array_equal(segmentation_to_bitmap({"size": [H, W], "counts": runs}, H, W),
                                  expected)
    with pytest.raises(DataError, match=r"RLE of size \[10, 12\] .* image of 20x12"):
        rle_to_bitmap(as_text, 20, W)


@pytest.mark.parametrize("direction, expected", [
    ("horizontal", (5, 3, 10, 8)),  # x -> 12 - x: [2, 7] -> [5, 10]
    ("vertical", (2, 2, 7, 7)),  # y -> 10 - y: [3, 8] -> [2, 7]
    ("diagonal", (5, 2, 10, 7)),
])
def test_flip_of_a_polygon_equals_the_flipped_bitmap(direction, expected):
    polygons = PolygonMasks([[RECT], [U_SHAPE]], H, W)
    bitmaps = polygons.to_bitmap()
    flipped = polygons.flip(direction).to_bitmap().masks
    np.testing.assert_array_equal(flipped, bitmaps.flip(direction).masks)  # exact
    np.testing.assert_array_equal(flipped[0], rect_bitmap(*expected))
    np.testing.assert_array_equal(polygons.flip(direction).flip(direction).polygons[0][0], RECT)
    off_grid = ellipse_and_triangle()
    assert_boundary_only(off_grid.flip(direction).to_bitmap().masks,
                         off_grid.to_bitmap().flip(direction).masks)


def test_resize_moves_polygons_and_bitmaps_alike():
    polygons = PolygonMasks([[RECT]], H, W)
    doubled = polygons.resize((20, 24))
    np.testing.assert_array_equal(doubled.polygons[0][0], [4, 6, 14, 6, 14, 16, 4, 16])
    np.testing.assert_array_equal(doubled.to_bitmap().masks[0], rect_bitmap(4, 6, 14, 16, 20, 24))
    np.testing.assert_array_equal(polygons.to_bitmap().resize((20, 24)).masks[0],
                                  rect_bitmap(4, 6, 14, 16, 20, 24))  # nearest: exact here
    assert polygons.rescale(1.5).height == 15 and polygons.rescale(1.5).width == 18
    off_grid = ellipse_and_triangle()
    for shape in ((60, 70), (23, 31)):
        assert_boundary_only(off_grid.resize(shape).to_bitmap().masks,
                             off_grid.to_bitmap().resize(shape).masks)


def test_bitmap_resize_handles_more_masks_than_cv2_channels():
    masks = BitmapMasks(np.ones((300, 4, 4), np.uint8), 4, 4)  # 3 chunks
    out = masks.resize((8, 6))
    assert out.masks.shape == (300, 8, 6) and out.masks.all()


def test_crop_clips_polygons_exactly_like_the_bitmap():
    polygons = PolygonMasks([[RECT], [U_SHAPE]], 12, 12)
    bitmaps = polygons.to_bitmap()
    window = np.array([4, 0, 12, 6])  # x in [4, 12], y in [0, 6]
    cropped = polygons.crop(window)
    assert (cropped.height, cropped.width) == (6, 8)
    ring = cropped.polygons[0][0].reshape(-1, 2)
    # RECT clipped to x >= 4, y <= 6, shifted by (-4, 0): the rectangle [0, 3] x [3, 6]
    assert {tuple(p) for p in ring.tolist()} == {(0.0, 3.0), (3.0, 3.0), (3.0, 6.0), (0.0, 6.0)}
    np.testing.assert_array_equal(cropped.to_bitmap().masks, bitmaps.crop(window).masks)
    # the U's two arms cut apart by the window: still the same pixels and area (16)
    arms = np.array([0, 5, 12, 12])
    np.testing.assert_array_equal(polygons.crop(arms).to_bitmap().masks, bitmaps.crop(arms).masks)
    assert polygons.crop(arms).areas[1] == 16.0
    # nothing left: MMDetection's placeholder keeps the instance (an empty mask)
    away = polygons.crop(np.array([10, 10, 12, 12]))
    np.testing.assert_array_equal(away.polygons[0][0], [0, 0, 0, 0, 0, 0])
    assert not away.to_bitmap().masks.any() and len(away) == 2


def test_crop_window_past_the_edge_is_clipped_to_the_image():
    bitmaps = BitmapMasks(rect_bitmap(2, 3, 7, 8)[None], H, W)
    cropped = bitmaps.crop(np.array([5, -4, 30, 6]))  # clipped to x in [5, 12], y in [0, 6]
    assert cropped.masks.shape == (1, 6, 7)
    np.testing.assert_array_equal(cropped.masks[0], rect_bitmap(0, 3, 2, 6, 6, 7))


def test_clip_polygon_sutherland_hodgman():
    triangle = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    ring = clip_polygon(triangle, 0, 0, 5, 5)  # the triangle's corner square minus nothing
    assert {tuple(p) for p in ring.tolist()} == {(0, 0), (5, 0), (5, 5), (0, 5)}
    assert len(clip_polygon(triangle, 20, 20, 30, 30)) == 0


def test_pad_adds_zeros_and_leaves_polygons_where_they_are():
    polygons = PolygonMasks([[RECT]], H, W)
    padded = polygons.pad((16, 20))
    assert (padded.height, padded.width) == (16, 20)
    np.testing.assert_array_equal(padded.polygons[0][0], RECT)
    bitmap = polygons.to_bitmap().pad((16, 20))
    np.testing.assert_array_equal(bitmap.masks[0], rect_bitmap(2, 3, 7, 8, 16, 20))
    np.testing.assert_array_equal(padded.to_bitmap().masks, bitmap.masks)  # exact
    with pytest.raises(DataError, match="smaller"):
        polygons.to_bitmap().pad((5, 5))


def test_indexing_keeps_the_selected_instances():
    polygons = PolygonMasks([[RECT], [U_SHAPE]], 12, 12)
    assert len(polygons[np.array([False, True])]) == 1
    np.testing.assert_array_equal(polygons[np.array([1])].polygons[0][0], U_SHAPE)
    bitmaps = polygons.to_bitmap()
    np.testing.assert_array_equal(bitmaps[np.array([False, True])].masks, bitmaps.masks[1:])
    assert bitmaps.to_tensor().dtype == torch.uint8 and bitmaps.to_tensor().shape == (2, 12, 12)


def square_masks() -> torch.Tensor:
    """(2, 10, 10): mask 0 is the square [2, 6) x [2, 6), mask 1 is empty."""
    masks = torch.zeros(2, 10, 10, dtype=torch.uint8)
    masks[0, 2:6, 2:6] = 1
    return masks


def test_crop_and_resize_is_roi_align_then_threshold():
    """aligned=True samples at pixel centres; adaptive sampling = ceil(box side / out side)."""
    masks = square_masks()
    boxes = torch.tensor([[2.0, 2, 6, 6], [0, 0, 8, 8], [1, 1, 5, 5]])
    inds = torch.tensor([0, 0, 0])
    out = crop_and_resize(masks, boxes, inds, (4, 4))
    assert out.shape == (3, 4, 4) and out.dtype == torch.float32
    assert out[0].eq(1).all()  # the box is the square
    # [0, 8]: bins of 2 pixels, sampled at pixels 0 and 1, 2 and 3, ...: rows/cols 1, 2 are in
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1
    torch.testing.assert_close(out[1], expected)
    # [1, 5] into 2 x 2 bins: each bin averages pixels (1, 2) or (3, 4) per axis
    averages = crop_and_resize(masks, boxes[2:], inds[2:], (2, 2), binarize=False)
    torch.testing.assert_close(averages[0], torch.tensor([[0.25, 0.5], [0.5, 1.0]]))
    torch.testing.assert_close(crop_and_resize(masks, boxes[2:], inds[2:], (2, 2))[0],
                               torch.tensor([[0.0, 1.0], [1.0, 1.0]]))  # >= 0.5
    assert crop_and_resize(masks, boxes[:0], inds[:0], (4, 4)).shape == (0, 4, 4)


def test_crop_and_resize_gathers_or_indexes_alike():
    """Fewer boxes than masks: the R masks are gathered; more: indexed by RoIAlign's batch index."""
    masks = square_masks()
    boxes = torch.tensor([[0.0, 0, 8, 8], [2, 2, 6, 6], [0, 0, 8, 8]])
    inds = torch.tensor([1, 0, 0])
    many = crop_and_resize(masks, boxes, inds, (4, 4))  # R = 3 > M = 2
    few = torch.stack([crop_and_resize(masks, boxes[k:k + 1], inds[k:k + 1], (4, 4))[0]
                       for k in range(3)])  # R = 1 <= M
    torch.testing.assert_close(many, few)
    assert many[0].eq(0).all() and many[1].eq(1).all()
    # the structures call it on their own masks
    bitmaps = BitmapMasks(masks.numpy(), 10, 10)
    torch.testing.assert_close(bitmaps.crop_and_resize(boxes, inds, (4, 4)), many)


def test_polygon_crop_and_resize_rasterises_the_cut_polygon():
    polygons = PolygonMasks([[[2.0, 2, 6, 2, 6, 6, 2, 6]]], 10, 10)
    out = polygons.crop_and_resize(torch.tensor([[2.0, 2, 6, 6], [0, 0, 8, 8]]),
                                   torch.tensor([0, 0]), (4, 4))
    assert out[0].eq(1).all()
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1
    torch.testing.assert_close(out[1], expected)
