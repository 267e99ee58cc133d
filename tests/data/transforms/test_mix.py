"""Mosaic, MixUp, their cached forms, RandomAffine: box geometry worked out by hand on images
of known sizes and colours, and the masks refusal."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.data.transforms import Compose
from detcli.data.transforms.affine import (RandomAffine, project_boxes, rotation_matrix,
                                           translation_matrix, warp)
from detcli.data.transforms.mix import CachedMixUp, CachedMosaic, mosaic_coords
from detcli.data.transforms.mixing import MixSourceRef
from detcli.errors import ConfigError, DataError


def sample(h, w, value, boxes, labels):
    return {"img": np.full((h, w, 3), value, np.uint8), "img_shape": (h, w, 3),
            "gt_bboxes": np.array(boxes, np.float32).reshape(-1, 4),
            "gt_labels": np.array(labels, np.int64), "bbox_fields": ["gt_bboxes"]}


class Queue:
    """A MixSource handing out the given samples in the order they are asked for."""

    def __init__(self, *samples):
        self.samples = list(samples)
        self.asked = 0

    def __len__(self):
        return 100

    def pipeline_input(self, idx):
        self.asked += 1
        return dict(self.samples.pop(0))


def run(step, results, *others):
    results["mix_source"] = MixSourceRef(Queue(*others))
    return Compose([step])(results)


# ---- Mosaic ------------------------------------------------------------------------------

MOSAIC = {"type": "Mosaic", "img_scale": [10, 10], "center_ratio_range": [1.0, 1.0]}


def mosaic_inputs():
    a = sample(10, 10, 10, [[2, 2, 6, 6], [1, 0, 5, 1]], [0, 1])  # top-left
    b = sample(5, 10, 20, [[0, 0, 10, 5]], [2])  # top-right, 10 wide and 5 high
    c = sample(20, 10, 30, [[2, 4, 8, 16]], [0])  # bottom-left, halved to 5 x 10
    d = sample(10, 10, 40, [[1, 1, 3, 3], [8, 2, 10, 4]], [1, 2])  # bottom-right
    return a, b, c, d


def test_mosaic_coords_of_each_quadrant():
    # centre (12, 8) on a 20 x 20 canvas, 10 x 10 patches
    assert mosaic_coords("top_left", (12, 8), (10, 10), (10, 10)) == ((2, 0, 12, 8), (0, 2, 10, 10))
    assert mosaic_coords("top_right", (12, 8), (10, 5), (10, 10)) == ((12, 3, 20, 8), (0, 0, 8, 5))
    assert mosaic_coords("bottom_left", (12, 8), (5, 10), (10, 10)) == ((7, 8, 12, 18), (0, 0, 5, 10))
    assert mosaic_coords("bottom_right", (12, 8), (10, 10), (10, 10)) == ((12, 8, 20, 18), (0, 0, 8, 10))


def test_mosaic_boxes_and_pixels_by_hand(monkeypatch):
    # center_ratio_range is drawn with np.random.uniform(lo, hi): force cx = 1.2 * 10, cy = 0.8 * 10
    draws = iter([0.0, 1.2, 0.8])  # prob test, then cx, cy ratios
    monkeypatch.setattr(np.random, "uniform", lambda lo, hi: next(draws))
    a, b, c, d = mosaic_inputs()
    out = run({**MOSAIC, "center_ratio_range": [0.5, 1.5]}, a, b, c, d)
    # A shifted by (2, -2): [2,2,6,6] -> [4,0,8,4]; [1,0,5,1] -> y in [-2,-1]: clipped to 0, dropped.
    # B by (12, 3): [12,3,22,8] clipped to the canvas, not to its quadrant. C halved, by (7, 8):
    # [1,2,4,8] -> [8,10,11,16]. D by (12, 8): [13,9,15,11]; [20,10,22,12] -> x1 = 20: dropped.
    np.testing.assert_array_equal(out["gt_bboxes"], [[4, 0, 8, 4], [12, 3, 20, 8], [8, 10, 11, 16],
                                                     [13, 9, 15, 11]])
    np.testing.assert_array_equal(out["gt_labels"], [0, 2, 0, 1])
    img = out["img"]
    assert img.shape == (20, 20, 3) and out["img_shape"] == (20, 20, 3)
    assert (img[0:8, 2:12] == 10).all() and (img[0:8, 0:2] == 114).all()
    assert (img[3:8, 12:20] == 20).all() and (img[0:3, 12:20] == 114).all()
    assert (img[8:18, 7:12] == 30).all() and (img[8:18, 0:7] == 114).all()
    assert (img[8:18, 12:20] == 40).all() and (img[18:20] == 114).all()


def test_mosaic_moves_ignore_boxes_too(monkeypatch):
    draws = iter([0.0, 1.0, 1.0])  # centre (10, 10): every patch in its own quadrant
    monkeypatch.setattr(np.random, "uniform", lambda lo, hi: next(draws))
    a, b, c, d = mosaic_inputs()
    a["gt_bboxes_ignore"] = np.array([[0, 0, 2, 2]], np.float32)
    d["gt_bboxes_ignore"] = np.array([[5, 5, 6, 6]], np.float32)
    for s in (a, b, c, d):
        s["bbox_fields"] = ["gt_bboxes", "gt_bboxes_ignore"]
        s.setdefault("gt_bboxes_ignore", np.zeros((0, 4), np.float32))
    out = run(MOSAIC, a, b, c, d)
    np.testing.assert_array_equal(out["gt_bboxes_ignore"], [[0, 0, 2, 2], [15, 15, 16, 16]])
    # with the centre at (10, 10): A as it is, B by (10, 5), C halved by (5, 10), D by (10, 10)
    np.testing.assert_array_equal(out["gt_bboxes"], [[2, 2, 6, 6], [1, 0, 5, 1], [10, 5, 20, 10],
                                                     [6, 12, 9, 18], [11, 11, 13, 13],
                                                     [18, 12, 20, 14]])


def test_mosaic_prob_zero_loads_nothing():
    a, b, c, d = mosaic_inputs()
    queue = Queue(b, c, d)
    a["mix_source"] = MixSourceRef(queue)
    out = Compose([{**MOSAIC, "prob": 0.0}])(a)
    assert out["img"].shape == (10, 10, 3) and queue.asked == 0


def test_loading_steps_run_on_the_drawn_images(tmp_path):
    # the steps before the first mixing step load the extra images; later steps do not
    calls = []

    def loading(results):
        calls.append("load")
        return results

    def after(results):
        calls.append("after")
        return results

    a, b, c, d = mosaic_inputs()
    a["mix_source"] = MixSourceRef(Queue(b, c, d))
    Compose([loading, MOSAIC, after])(a)
    assert calls == ["load", "load", "load", "load", "after"]


def test_mixing_without_a_dataset_is_a_config_error():
    a, *_ = mosaic_inputs()
    with pytest.raises(ConfigError, match="Mosaic mixes in other images of its dataset"):
        Compose([MOSAIC])(a)


def test_masks_are_refused_naming_the_transform():
    a, b, c, d = mosaic_inputs()
    a["mask_fields"] = ["gt_masks"]
    with pytest.raises(ConfigError, match="Mosaic moves boxes only"):
        run(MOSAIC, a, b, c, d)
    with pytest.raises(ConfigError, match="RandomAffine moves boxes only"):
        Compose([{"type": "RandomAffine"}])(dict(a))


# ---- MixUp -------------------------------------------------------------------------------

MIXUP = {"type": "MixUp", "img_scale": [10, 10], "ratio_range": [1.0, 1.0]}


def test_mixup_averages_and_keeps_both_boxes():
    own = sample(10, 10, 100, [[1, 1, 4, 4]], [0])
    other = sample(20, 20, 200, [[2, 2, 10, 10]], [1])  # halved to 10 x 10
    out = run({**MIXUP, "flip_ratio": 1.0}, own, other)  # never mirrored
    np.testing.assert_array_equal(out["gt_bboxes"], [[1, 1, 4, 4], [1, 1, 5, 5]])
    np.testing.assert_array_equal(out["gt_labels"], [0, 1])
    assert (out["img"] == 150).all() and out["img"].dtype == np.uint8


def test_mixup_mirrors_the_other_image_and_its_boxes():
    own = sample(10, 10, 100, [[1, 1, 4, 4]], [0])
    other = sample(20, 20, 200, [[2, 2, 10, 10]], [1])
    other["img"][:, :10] = 0  # left half black: after the mirror it is the right half
    out = run({**MIXUP, "flip_ratio": 0.0}, own, other)  # uniform(0, 1) > 0: mirrored
    np.testing.assert_array_equal(out["gt_bboxes"], [[1, 1, 4, 4], [5, 1, 9, 5]])  # x -> 10 - x
    assert (out["img"][:, :5] == 150).all() and (out["img"][:, 5:] == 50).all()


def test_mixup_jitter_and_offset(monkeypatch):
    # the other image (5 x 5) is doubled to fit 10 x 10, then jittered x2 to 20 x 20 and cut
    # at a random offset to the 10 x 10 sample: its box [1,1,2,2] -> x4 = [4,4,8,8] - offset
    own = sample(10, 10, 100, [[0, 0, 2, 2]], [0])
    other = sample(5, 5, 200, [[1, 1, 2, 2]], [1])
    np.random.seed(3)
    np.random.randint(0, 100), np.random.uniform(2.0, 2.0), np.random.uniform(0, 1)  # index, jitter, flip
    y_off, x_off = np.random.randint(0, 10), np.random.randint(0, 10)  # upper bound exclusive
    np.random.seed(3)
    out = run({**MIXUP, "ratio_range": [2.0, 2.0], "flip_ratio": 1.0}, own, other)
    expected = np.clip(np.array([4, 4, 8, 8], np.float32) - [x_off, y_off, x_off, y_off], 0, 10)
    keep = expected[0] < 10 and expected[1] < 10 and expected[2] > 0 and expected[3] > 0
    boxes = [[0, 0, 2, 2], expected] if keep else [[0, 0, 2, 2]]
    np.testing.assert_array_equal(out["gt_bboxes"], boxes)


def test_mixup_draws_again_until_an_image_has_boxes():
    own = sample(10, 10, 100, [[1, 1, 4, 4]], [0])
    empty = sample(10, 10, 0, np.zeros((0, 4)), [])
    other = sample(10, 10, 200, [[2, 2, 3, 3]], [2])
    queue = Queue(empty, empty, other)
    own["mix_source"] = MixSourceRef(queue)
    out = Compose([{**MIXUP, "flip_ratio": 1.0}])(own)
    assert queue.asked == 3 and out["gt_labels"].tolist() == [0, 2]


# ---- the cached forms --------------------------------------------------------------------

def test_cached_mosaic_waits_for_five_samples_then_mixes_from_its_cache():
    step = CachedMosaic(img_scale=(10, 10), max_cached_images=6, random_pop=False)
    outs = [step(sample(10, 10, 10 * k, [[1, 1, 3, 3]], [k % 3])) for k in range(1, 8)]
    assert [o["img"].shape[0] for o in outs] == [10, 10, 10, 10, 20, 20, 20]
    assert len(step.cache) == 6  # FIFO: the oldest left when the 7th came
    assert [int(s["img"][0, 0, 0]) for s in step.cache.items] == [20, 30, 40, 50, 60, 70]


def test_cached_mixup_mixes_with_a_cached_sample():
    step = CachedMixUp(img_scale=(10, 10), ratio_range=(1.0, 1.0), flip_ratio=1.0,
                       max_cached_images=2)
    first = step(sample(10, 10, 100, [[1, 1, 4, 4]], [0]))
    assert (first["img"] == 100).all()  # one sample in the cache: nothing to mix
    second = step(sample(10, 10, 200, [[2, 2, 5, 5]], [1]))
    # mixed with itself (value 200) or the first sample (150)
    assert int(second["img"][0, 0, 0]) in (150, 200) and len(second["gt_bboxes"]) == 2


def test_a_cache_is_not_pickled_into_workers():
    import pickle

    step = CachedMosaic(img_scale=(10, 10))
    step(sample(10, 10, 1, [[1, 1, 3, 3]], [0]))
    assert len(pickle.loads(pickle.dumps(step)).cache) == 0


# ---- RandomAffine ------------------------------------------------------------------------

def test_affine_scaling_by_hand():
    step = RandomAffine(max_rotate_degree=0, max_translate_ratio=0, scaling_ratio_range=(2, 2),
                        max_shear_degree=0)
    results = sample(10, 10, 50, [[1, 2, 3, 4], [4, 4, 8, 8], [6, 6, 9, 9]], [0, 1, 2])
    out = step(results)
    # x2: [2,4,6,8]; [8,8,16,16] clipped to [8,8,10,10]; [12,12,18,18] -> x1 = 10: dropped
    np.testing.assert_array_equal(out["gt_bboxes"], [[2, 4, 6, 8], [8, 8, 10, 10]])
    np.testing.assert_array_equal(out["gt_labels"], [0, 1])
    assert out["img"].shape == (10, 10, 3)


def test_affine_rotation_takes_the_extent_of_the_corners():
    # 90 degrees about the origin, then 10 to the right: (x, y) -> (10 - y, x)
    matrix = translation_matrix(10, 0) @ rotation_matrix(90)
    np.testing.assert_allclose(project_boxes(np.array([[1, 2, 3, 4]], np.float32), matrix),
                               [[6, 1, 8, 3]], atol=1e-5)
    out = warp(sample(10, 10, 50, [[1, 2, 3, 4]], [0]), matrix, (10, 10), (114, 114, 114))
    np.testing.assert_allclose(out["gt_bboxes"], [[6, 1, 8, 3]], atol=1e-5)


def test_affine_border_sets_the_output_size():
    step = RandomAffine(max_rotate_degree=0, max_translate_ratio=0, scaling_ratio_range=(1, 1),
                        max_shear_degree=0, border=(-5, -2))
    out = step(sample(20, 30, 50, [[25, 1, 29, 3]], [0]))
    assert out["img"].shape == (16, 20, 3)  # (20 - 4, 30 - 10)
    assert len(out["gt_bboxes"]) == 0  # x1 = 25 is outside the 20-pixel-wide output


def test_loading_steps_that_reject_every_image():
    a, *_ = mosaic_inputs()

    class Rejecting(Queue):
        def pipeline_input(self, idx):
            self.asked += 1
            return {}

    a["mix_source"] = MixSourceRef(Rejecting())
    with pytest.raises(DataError, match="rejected 10 images"):
        Compose([lambda r: r if "img" in r else None, MOSAIC])(a)
