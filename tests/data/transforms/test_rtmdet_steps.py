"""RTMDet's single-image steps: YOLOXHSVRandomAug, RandomResize, FilterAnnotations and Pad with
a per-channel value; numbers worked out by hand."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from detcli.data.transforms import Compose
from detcli.data.transforms.colour import YOLOXHSVRandomAug, hsv_shift
from detcli.data.transforms.filtering import FilterAnnotations
from detcli.data.transforms.random_resize import RandomResize, RandomResizeConfig
import detcli.engine.hooks  # noqa: F401  (registers the hooks the docs' snippet names)
from detcli.errors import ConfigError, DataError
from detcli.registry import HOOKS, ensure_current


def results(h=10, w=20, boxes=((0, 0, 10, 5),), labels=(0,)):
    return {"img": np.full((h, w, 3), 100, np.uint8), "img_shape": (h, w, 3),
            "gt_bboxes": np.array(boxes, np.float32).reshape(-1, 4),
            "gt_labels": np.array(labels, np.int64), "bbox_fields": ["gt_bboxes"]}


def test_hsv_value_and_hue_gains_by_hand():
    gray = np.full((2, 2, 3), 100, np.uint8)  # H 0, S 0, V 100
    assert (hsv_shift(gray, np.array([0, 0, 20], np.int16)) == 120).all()
    blue = np.zeros((1, 1, 3), np.uint8)
    blue[..., 0] = 255  # BGR blue: OpenCV hue 120 of 180
    red = hsv_shift(blue, np.array([60, 0, 0], np.int16))  # (120 + 60) mod 180 = 0: red
    assert red[0, 0].tolist() == [0, 0, 255]
    white = np.full((1, 1, 3), 250, np.uint8)
    assert hsv_shift(white, np.array([0, 0, 30], np.int16))[0, 0].tolist() == [255] * 3  # V clipped


def test_hsv_draws_numpy_in_mmdetections_order():
    step = YOLOXHSVRandomAug(hue_delta=5, saturation_delta=30, value_delta=30)
    np.random.seed(4)
    expected = (np.random.uniform(-1, 1, 3) * [5, 30, 30] * np.random.randint(0, 2, 3)).astype(np.int16)
    np.random.seed(4)
    assert step.draw_gains().tolist() == expected.tolist()


def test_hsv_refuses_a_float_image():
    r = results()
    r["img"] = r["img"].astype(np.float32)
    with pytest.raises(DataError, match="uint8 BGR"):
        YOLOXHSVRandomAug()(r)


def test_random_resize_ratio_keeps_the_aspect_ratio():
    step = RandomResize(scale=(40, 40), ratio_range=(0.5, 0.5), keep_ratio=True)
    out = step(results())  # scale (20, 20): a 20 x 10 image fits as 20 x 10, factor 1
    assert out["img"].shape == (10, 20, 3)
    step = RandomResize(scale=(80, 80), ratio_range=(0.5, 0.5), keep_ratio=True)
    out = step(results())  # scale (40, 40): 40 x 20, factor 2
    assert out["img"].shape == (20, 40, 3)
    np.testing.assert_array_equal(out["gt_bboxes"], [[0, 0, 20, 10]])
    np.testing.assert_array_equal(out["scale_factor"], [2, 2, 2, 2])


def test_random_resize_two_scales_draw_each_dimension():
    step = RandomResize(scale=[(30, 10), (30, 20)], keep_ratio=False)
    np.random.seed(0)
    heights = {step(results())["img"].shape[0] for _ in range(30)}
    assert heights <= set(range(10, 21)) and len(heights) > 3
    assert {step(results())["img"].shape[1] for _ in range(5)} == {30}


def test_random_resize_config_checks():
    with pytest.raises(ValidationError, match="needs one scale"):
        RandomResizeConfig(scale=[(10, 10), (20, 20)], ratio_range=(0.5, 1.0))


def test_filter_annotations_by_size():
    r = results(boxes=[[0, 0, 1, 5], [0, 0, 2, 2], [0, 0, 5, 1.5]], labels=[0, 1, 2])
    out = FilterAnnotations(min_gt_bbox_wh=(1, 1))(r)  # width and height must exceed 1
    np.testing.assert_array_equal(out["gt_bboxes"], [[0, 0, 2, 2], [0, 0, 5, 1.5]])
    np.testing.assert_array_equal(out["gt_labels"], [1, 2])
    tiny = results(boxes=[[0, 0, 1, 1]], labels=[0])
    assert FilterAnnotations()(tiny) is None  # keep_empty: draw another image
    kept = FilterAnnotations(keep_empty=False)(results(boxes=[[0, 0, 1, 1]], labels=[0]))
    assert kept["gt_bboxes"].shape == (0, 4)
    assert FilterAnnotations()(results(boxes=np.zeros((0, 4)), labels=[])) is not None


def test_filter_annotations_by_mask_needs_masks():
    with pytest.raises(ConfigError, match="needs instance masks"):
        Compose([{"type": "FilterAnnotations", "by_mask": True}])(results())


def test_pad_with_a_value_per_channel():
    out = Compose([{"type": "Pad", "size": [12, 24], "pad_val": {"img": [114, 115, 116]}}])(results())
    assert out["img"].shape == (12, 24, 3)
    assert out["img"][11, 23].tolist() == [114, 115, 116] and out["img"][0, 0].tolist() == [100] * 3


def test_the_rtmdet_pipelines_in_docs_data_md_build():
    text = (Path(__file__).parents[3] / "docs" / "data.md").read_text()
    block = text.split("## RTMDet's pipelines in det's terms")[1].split("```toml")[1].split("```")[0]
    snippet = tomllib.loads(block)
    assert Compose(snippet["data"]["train"]["pipeline"]).names[2] == "CachedMosaic"
    ensure_current()
    hooks = [HOOKS.config(h["type"]).model_validate(h) for h in snippet["custom_hooks"]]
    assert Compose(hooks[1].switch_pipeline).names[2] == "RandomResize"
