"""RandomChoice (one branch of transform lists per sample) and RandomChoiceResize, as DETR's
training pipeline uses them: which branch a seed picks, and the boxes through the crop branch."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from detcli.config.loader import load_config
from detcli.data.transforms import Compose
from detcli.data.transforms.choice import RandomChoice, RandomChoiceConfig
from detcli.data.transforms.random_resize import RandomChoiceResize
from detcli.errors import ConfigError
from tests.data.transforms.images import make_results


def tagging(tag):
    """A step that records which branch ran."""
    def step(results):
        results.setdefault("ran", []).append(tag)
        return results
    return step


def test_the_branch_is_one_uniform_draw_from_numpys_state():
    choice = RandomChoice(transforms=[[tagging("a")], [tagging("b"), tagging("b2")]])
    # np.random.choice(2) is randint(0, 2): seed 0 draws 0, seed 1 draws 1 (MMCV's one draw)
    for seed, ran in ((0, ["a"]), (1, ["b", "b2"])):
        np.random.seed(seed)
        assert choice({})["ran"] == ran
        after = np.random.random_sample()
        np.random.seed(seed)
        np.random.randint(0, 2)
        assert after == np.random.random_sample()  # exactly one draw was taken


def test_prob_picks_by_the_cumulative_distribution():
    choice = RandomChoice(transforms=[[tagging(0)], [tagging(1)], [tagging(2)]], prob=[0.2, 0.3, 0.5])
    # the first uniform draw of seeds 0, 1, 3: 0.5488, 0.4170, 0.5508; of seed 7: 0.0763.
    # cdf [0.2, 0.5, 1.0]: u in [0.5, 1) is branch 2, [0.2, 0.5) branch 1, [0, 0.2) branch 0
    for seed, branch in ((0, 2), (1, 1), (3, 2), (7, 0)):
        np.random.seed(seed)
        assert choice({})["ran"] == [branch]
    always_second = RandomChoice(transforms=[[tagging(0)], [tagging(1)]], prob=[0.0, 1.0])
    assert {tuple(always_second({})["ran"]) for _ in range(20)} == {(1,)}


def test_a_branch_that_rejects_the_sample_rejects_it():
    choice = RandomChoice(transforms=[[lambda results: None]])
    assert choice({"img": np.zeros((2, 2, 3))}) is None


def test_the_crop_branch_moves_the_boxes(monkeypatch):
    """DETR's second branch on a 200 x 100 image, every draw fixed by hand."""
    res = make_results(h=100, w=200, boxes=[[20, 10, 120, 60], [150, 70, 190, 95]], labels=[3, 4])
    draws = iter([0, 390, 500, 5, 100, 0])  # resize idx, crop h, crop w, y0, x0, resize idx
    monkeypatch.setattr(np.random, "randint", lambda *args: next(draws))
    choice = RandomChoice(transforms=[[], [
        {"type": "RandomChoiceResize", "scales": [(400, 1333)], "keep_ratio": True},
        {"type": "RandomCrop", "crop_type": "absolute_range", "crop_size": (384, 600),
         "allow_negative_crop": True},
        {"type": "RandomChoiceResize", "scales": [(480, 1333)], "keep_ratio": True},
    ]], prob=[0.0, 1.0])
    out = choice(res)
    # resize: factor min(1333 / 200, 400 / 100) = 4 -> 800 x 400; boxes x4:
    #   [80, 40, 480, 240], [600, 280, 760, 380]
    # crop 390 x 500 at (x0, y0) = (100, 5): [-20, 35, 380, 235] -> clipped [0, 35, 380, 235];
    #   [500, 275, 660, 375] -> clipped to x in [500, 500]: empty, dropped with label 4
    # resize: factor min(1333 / 500, 480 / 390) = 480 / 390 -> 615 x 480 (500 * 1.2308 + 0.5);
    #   sx = 615 / 500 = 1.23, sy = 480 / 390
    assert out["img"].shape == (480, 615, 3) and out["img_shape"] == (480, 615, 3)
    np.testing.assert_allclose(out["gt_bboxes"], [[0, 35 * 480 / 390, 380 * 1.23, 235 * 480 / 390]],
                               rtol=1e-6)
    np.testing.assert_array_equal(out["gt_labels"], [3])
    np.testing.assert_allclose(out["scale_factor"], [1.23, 480 / 390] * 2, rtol=1e-6)  # the last step's
    assert out["scale_idx"] == 0


def test_random_choice_resize_draws_its_own_scale_after_another_resize():
    np.random.seed(0)
    res = make_results(h=20, w=40)
    res["scale"] = (999, 999)  # left by an earlier step: not this one's
    out = RandomChoiceResize(scales=[(10, 100), (20, 100), (30, 100)], keep_ratio=True)(res)
    np.random.seed(0)
    idx = np.random.randint(3)
    short = (10, 20, 30)[idx]
    assert out["scale_idx"] == idx and out["img"].shape[:2] == (short, 2 * short)


def test_config_errors_name_what_is_wrong():
    with pytest.raises(ValidationError, match="prob has 1 values for 2 transform lists"):
        RandomChoiceConfig(transforms=[[], []], prob=[1.0])
    with pytest.raises(ValidationError, match="sum to 1"):
        RandomChoiceConfig(transforms=[[], []], prob=[0.5, 0.6])
    with pytest.raises(ValidationError, match="at least 1"):
        RandomChoiceConfig(transforms=[])
    with pytest.raises(ValidationError, match="RandomCrop"):
        RandomChoiceConfig(transforms=[[{"type": "RandomCrop", "crop_size": (0.5, 600)}]])
    with pytest.raises(ConfigError, match="branch 0 holds the mixed-image step Mosaic"):
        Compose([{"type": "RandomChoice", "transforms": [[{"type": "Mosaic", "img_scale": (32, 32)}]]}])


def test_detr_r50_trains_with_mmdetections_random_choice_pipeline():
    """detr_r50_8xb2-150e_coco.py's train_pipeline, value for value."""
    steps = load_config("detr_r50").cfg.data.train.pipeline
    assert [t.type for t in steps] == ["LoadImageFromFile", "LoadAnnotations", "RandomFlip",
                                       "RandomChoice", "Normalize", "DefaultFormatBundle", "Collect"]
    assert steps[2].flip_ratio == 0.5
    multi = [(s, 1333) for s in range(480, 801, 32)]
    (resize,), (first, crop, second) = steps[3].transforms
    assert steps[3].prob is None
    assert resize.type == second.type == first.type == "RandomChoiceResize"
    assert resize.scales == second.scales == multi and len(multi) == 11
    assert first.scales == [(400, 1333), (500, 1333), (600, 1333)]
    assert resize.keep_ratio and first.keep_ratio and second.keep_ratio
    assert (crop.type, crop.crop_type, tuple(crop.crop_size), crop.allow_negative_crop) == \
        ("RandomCrop", "absolute_range", (384, 600), True)
