"""Resize, RandomFlip and Pad: what each does to the image and to the boxes."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.data.transforms.geometric import (
    Pad,
    RandomFlip,
    Resize,
    flip_boxes,
    rescale_size,
)
from detcli.errors import DataError
from tests.data.transforms.images import make_results


@pytest.mark.parametrize(
    "w, h, scale, expected",
    [
        (640, 480, (1333, 800), (1067, 800)),  # factor min(1333/640, 800/480) = 5/3; 1066.67 -> 1067
        (480, 640, (1333, 800), (800, 1067)),  # portrait: long edge is the height
        (500, 375, (800, 1333), (1067, 800)),  # the pair's order does not matter
        (2000, 500, (1333, 800), (1333, 333)),  # long edge binds: 1333/2000 = 0.6665; 333.25 -> 333
        (101, 51, (30, 20), (30, 15)),  # 30/101: 15.148 -> 15
    ],
)
def test_rescale_size_follows_mmcv(w, h, scale, expected):
    assert rescale_size(w, h, scale) == expected


def test_resize_keep_ratio_scales_boxes_and_records_factor():
    out = Resize(img_scale=(80, 40))(make_results())  # 40x20 -> factor 2
    assert out["img"].shape == (40, 80, 3)
    assert out["img_shape"] == (40, 80, 3) and out["pad_shape"] == (40, 80, 3)
    np.testing.assert_array_equal(out["scale_factor"], [2, 2, 2, 2])
    assert out["scale_factor"].dtype == np.float32
    np.testing.assert_array_equal(out["gt_bboxes"], [[8, 4, 20, 16]])
    assert out["scale"] == (80, 40) and out["keep_ratio"] is True


def test_resize_without_keep_ratio_uses_w_h_and_clips():
    boxes = [[4, 2, 10, 8], [30, 10, 45, 25]]  # the second reaches beyond the border
    out = Resize(img_scale=(60, 10), keep_ratio=False)(make_results(boxes=boxes))
    assert out["img"].shape == (10, 60, 3)
    np.testing.assert_allclose(out["scale_factor"], [1.5, 0.5, 1.5, 0.5])
    np.testing.assert_allclose(out["gt_bboxes"], [[6, 1, 15, 4], [45, 5, 60, 10]])  # 67.5, 12.5 clipped
    unclipped = Resize(img_scale=(60, 10), keep_ratio=False, bbox_clip_border=False)(
        make_results(boxes=boxes))
    np.testing.assert_allclose(unclipped["gt_bboxes"][1], [45, 5, 67.5, 12.5])


def test_resize_then_map_back_is_identity_within_a_pixel():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [517, 333], size=(20, 2))
    wh = rng.uniform(1, 100, size=(20, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [517, 333])], axis=1)
    res = make_results(h=333, w=517, boxes=boxes)
    out = Resize(img_scale=(1333, 800))(res)
    assert out["img"].shape[:2] == (800, 1242)  # 517 * 800/333 = 1242.04
    back = out["gt_bboxes"] / out["scale_factor"]
    assert np.abs(back - boxes).max() < 1.0


def test_multiscale_value_and_range_and_ratio():
    np.random.seed(0)
    value = Resize(img_scale=[(100, 50), (200, 60)], multiscale_mode="value")
    picked = {value.choose_scale()[0] for _ in range(30)}
    assert picked == {(100, 50), (200, 60)}
    ranged = Resize(img_scale=[(100, 50), (200, 60)], multiscale_mode="range")
    draws = [ranged.choose_scale()[0] for _ in range(50)]
    assert all(100 <= long <= 200 and 50 <= short <= 60 for long, short in draws)
    assert len(set(draws)) > 10
    ratio = Resize(img_scale=(100, 50), ratio_range=(0.5, 2.0))
    for _ in range(20):
        (w, h), _ = ratio.choose_scale()
        assert 50 <= w <= 200 and 25 <= h <= 100 and abs(w / h - 2) < 0.1


def test_resize_uses_scale_set_by_test_time_aug():
    res = make_results()
    res["scale"] = (20, 10)
    assert Resize()(res)["img"].shape == (10, 20, 3)
    res = make_results()
    res["scale_factor"] = 0.5  # MultiScaleFlipAug(scale_factor=0.5)
    assert Resize()(res)["img"].shape == (10, 20, 3)
    with pytest.raises(DataError, match="no img_scale"):
        Resize()(make_results())


@pytest.mark.parametrize(
    "direction, expected",
    [("horizontal", [30, 2, 36, 8]), ("vertical", [4, 12, 10, 18]), ("diagonal", [30, 12, 36, 18])],
)
def test_flip_box_formula(direction, expected):
    boxes = np.array([[4, 2, 10, 8]], np.float32)  # in a 20 x 40 (h x w) image
    flipped = flip_boxes(boxes, (20, 40), direction)
    np.testing.assert_array_equal(flipped, [expected])
    np.testing.assert_array_equal(flip_boxes(flipped, (20, 40), direction), boxes)  # twice = identity


def test_random_flip_moves_pixels_with_the_boxes():
    res = make_results()
    img = res["img"].copy()
    out = RandomFlip(flip_ratio=1.0)(res)
    assert out["flip"] is True and out["flip_direction"] == "horizontal"
    np.testing.assert_array_equal(out["img"], img[:, ::-1])
    np.testing.assert_array_equal(out["gt_bboxes"], [[30, 2, 36, 8]])
    # The pixel at the box's top-left corner ends up inside the flipped box's top-right corner.
    assert out["img"][2, 35].tolist() == img[2, 4].tolist()
    again = RandomFlip(flip_ratio=1.0)({**out, "flip": True})
    np.testing.assert_array_equal(again["img"], img)
    np.testing.assert_array_equal(again["gt_bboxes"], [[4, 2, 10, 8]])


def test_random_flip_probabilities():
    np.random.seed(1)
    never = [RandomFlip(flip_ratio=0.0)(make_results())["flip"] for _ in range(20)]
    assert not any(never)
    vertical = RandomFlip(flip_ratio=[0.0, 1.0], direction=["horizontal", "vertical"])(make_results())
    assert vertical["flip_direction"] == "vertical"
    half = [RandomFlip(flip_ratio=0.5)(make_results())["flip"] for _ in range(200)]
    assert 60 < sum(half) < 140
    preset = RandomFlip(flip_ratio=0.0)({**make_results(), "flip": True, "flip_direction": "vertical"})
    np.testing.assert_array_equal(preset["gt_bboxes"], [[4, 12, 10, 18]])
    with pytest.raises(ValueError, match="direction"):
        RandomFlip(flip_ratio=0.5, direction="sideways")


def test_pad_to_divisor_and_size_leaves_boxes():
    res = make_results()
    out = Pad(size_divisor=32, pad_val=0)(res)
    assert out["img"].shape == (32, 64, 3) and out["pad_shape"] == (32, 64, 3)
    assert out["img_shape"] == (20, 40, 3)
    np.testing.assert_array_equal(out["gt_bboxes"], [[4, 2, 10, 8]])
    assert (out["img"][20:] == 0).all() and (out["img"][:, 40:] == 0).all()
    np.testing.assert_array_equal(out["img"][:20, :40], make_results()["img"])
    sized = Pad(size=(25, 50), pad_val=-1.5)(make_results())
    assert sized["img"].shape == (25, 50, 3) and sized["img"][24, 49, 0] == -1.5
    assert Pad(pad_to_square=True)(make_results())["img"].shape == (40, 40, 3)
    with pytest.raises(DataError, match="smaller than the image"):
        Pad(size=(10, 50))(make_results())
    with pytest.raises(ValueError, match="exactly one"):
        Pad(size=(10, 10), size_divisor=32)
