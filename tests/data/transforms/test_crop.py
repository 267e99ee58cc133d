"""RandomCrop: the window, and the boxes shifted, clipped and dropped with their labels."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.data.transforms.crop import RandomCrop
from tests.data.transforms.images import make_results


def test_random_crop_shifts_clips_and_drops(monkeypatch):
    res = make_results(boxes=[[4, 2, 12, 8], [12, 6, 20, 18], [31, 0, 39, 5]], labels=[0, 1, 2])
    img = res["img"].copy()
    offsets = iter([5, 10])  # y0, then x0
    monkeypatch.setattr(np.random, "randint", lambda lo, hi: next(offsets))
    out = RandomCrop(crop_size=(10, 20))(res)  # window x in [10, 30), y in [5, 15)
    assert out["img"].shape == (10, 20, 3) and out["img_shape"] == (10, 20, 3)
    np.testing.assert_array_equal(out["img"], img[5:15, 10:30])
    # [4,2,12,8] -> [-6,-3,2,3] -> clipped [0,0,2,3]; [12,6,20,18] -> [2,1,10,13] -> [2,1,10,10];
    # [31,0,39,5] -> [21,-5,29,0] -> [20,0,20,0]: empty, dropped with its label.
    np.testing.assert_array_equal(out["gt_bboxes"], [[0, 0, 2, 3], [2, 1, 10, 10]])
    np.testing.assert_array_equal(out["gt_labels"], [0, 1])


def test_random_crop_without_gt_left(monkeypatch):
    monkeypatch.setattr(np.random, "randint", lambda lo, hi: 0)  # window x, y in [0, 10)
    far = dict(boxes=[[30, 12, 38, 18]], labels=[1])
    assert RandomCrop(crop_size=(10, 10))(make_results(**far)) is None
    kept = RandomCrop(crop_size=(10, 10), allow_negative_crop=True)(make_results(**far))
    assert kept["gt_bboxes"].shape == (0, 4) and kept["gt_labels"].shape == (0,)
    no_gt = RandomCrop(crop_size=(10, 10))(make_results(boxes=np.zeros((0, 4)), labels=[]))
    assert no_gt is not None and no_gt["img"].shape == (10, 10, 3)


def test_random_crop_sizes_by_type():
    np.random.seed(0)
    assert RandomCrop(crop_size=(50, 50)).crop_hw(20, 40) == (20, 40)  # never larger than the image
    assert RandomCrop(crop_size=(0.5, 0.25), crop_type="relative").crop_hw(20, 40) == (10, 10)
    for _ in range(10):
        h, w = RandomCrop(crop_size=(5, 15), crop_type="absolute_range").crop_hw(20, 40)
        assert 5 <= h <= 15 and 5 <= w <= 15
        h, w = RandomCrop(crop_size=(0.5, 0.5), crop_type="relative_range").crop_hw(20, 40)
        assert 10 <= h <= 20 and 20 <= w <= 40
    with pytest.raises(ValueError, match="integer"):
        RandomCrop(crop_size=(0.5, 10))
