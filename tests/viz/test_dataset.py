"""``detcli.viz.dataset`` and the viewing pipeline under it: boxes follow the training
augmentations, de-normalisation gives the pixels back, and one PNG per image is written."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detcli.analysis.pipeline_view import denormalize, viewing_pipeline
from detcli.config.loader import load_config
from detcli.errors import ConfigError
from detcli.viz.canvas import image_grid
from detcli.viz.dataset import DatasetPictures, pick_indices, sample_dataset, write_samples
from detcli.viz.draw import TITLE_HEIGHT
from tests.analysis.tiny_data import make_tiny

FLIP = "data.train.pipeline.3.flip_ratio=1.0"  # the tiny preset's RandomFlip


def test_viewing_pipeline_drops_formatting_and_loads_annotations():
    test_pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "MultiScaleFlipAug", "img_scale": [64, 64], "transforms": [
            {"type": "Resize", "keep_ratio": True}, {"type": "ImageToTensor", "keys": ["img"]},
            {"type": "Collect", "keys": ["img"]}]},
    ]
    steps = viewing_pipeline(test_pipeline)
    assert [s["type"] for s in steps] == ["LoadImageFromFile", "LoadAnnotations", "MultiScaleFlipAug"]
    assert [s["type"] for s in steps[2]["transforms"]] == ["Resize"]
    train = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations"}, {"type": "DefaultFormatBundle"}]
    assert [s["type"] for s in viewing_pipeline(train)] == ["LoadImageFromFile", "LoadAnnotations"]


def test_denormalize_inverts_normalize_and_swaps_back_to_bgr():
    bgr = np.array([[[10, 120, 250]]], np.uint8)  # (1, 1, 3)
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    normalised = (bgr[..., ::-1].astype(np.float32) - mean) / std  # to_rgb, as Normalize does
    cfg = {"mean": mean, "std": std, "to_rgb": True}
    np.testing.assert_array_equal(denormalize(normalised, cfg, "bgr"), bgr)
    np.testing.assert_array_equal(denormalize(bgr.astype(np.float32), None, "bgr"), bgr)
    np.testing.assert_array_equal(denormalize(bgr[..., ::-1].astype(np.float32), None, "rgb"), bgr)


def test_pick_indices_is_seeded_sorted_and_complete_when_short():
    assert pick_indices(3, 5, seed=0) == [0, 1, 2]
    picked = pick_indices(100, 4, seed=7)
    assert picked == sorted(picked) and len(set(picked)) == 4 and picked == pick_indices(100, 4, seed=7)


def test_boxes_follow_a_horizontal_flip(tmp_path):
    tiny = make_tiny(tmp_path)
    cfg = load_config(tiny.config, [FLIP]).cfg
    samples = sample_dataset(cfg, "train", num=2, seed=0)
    assert [s.index for s in samples] == [0, 1]
    b = samples[1].view  # b.png, 100 x 50: Resize to fit 256 x 256 scales by 2.56 -> 256 x 128
    assert b.flip and b.flip_direction == "horizontal"
    assert b.img_shape == (128, 256) and b.pad_shape == (128, 256)
    # triangle [10, 5, 30, 25] -> x 2.56 -> [25.6, 12.8, 76.8, 64] -> mirrored in 256:
    # [256 - 76.8, 12.8, 256 - 25.6, 64]
    np.testing.assert_allclose(b.gt_boxes, [[179.2, 12.8, 230.4, 64.0]], rtol=1e-5)
    assert samples[1].to_dict()["classes"] == ["triangle"]
    a = samples[0].view  # a.png: two boxes and a crowd box, scaled by 2 into 256 x 192
    np.testing.assert_allclose(a.gt_boxes, [[256 - 80, 40, 256 - 20, 100], [256 - 200, 20, 256 - 120, 160]])
    np.testing.assert_allclose(a.ignore_boxes, [[256 - 40, 120, 256, 160]])


def test_the_image_is_flipped_with_the_boxes(tmp_path):
    tiny = make_tiny(tmp_path)
    plain = sample_dataset(load_config(tiny.config, ["data.train.pipeline.3.flip_ratio=0.0"]).cfg,
                           "train", num=1)[0].view
    flipped = sample_dataset(load_config(tiny.config, [FLIP]).cfg, "train", num=1)[0].view
    diff = np.abs(flipped.image[:, ::-1].astype(int) - plain.image.astype(int))
    assert diff.max() <= 1  # the same pixels, mirrored (up to rounding)


def test_write_samples_one_png_each_or_a_grid(tmp_path):
    tiny = make_tiny(tmp_path)
    samples = sample_dataset(load_config(tiny.config).cfg, "val", num=5)
    assert len(samples) == 2  # the dataset has 2 images
    paths = write_samples(samples, tmp_path / "out")
    assert [p.name for p in paths] == ["000_a.png", "001_b.png"]
    assert cv2.imread(str(paths[0])).shape == (TITLE_HEIGHT + 192, 256, 3)
    assert cv2.imread(str(paths[1])).shape == (TITLE_HEIGHT + 128, 256, 3)
    grid = write_samples(samples, tmp_path / "grid", grid=True)
    assert cv2.imread(str(grid[0])).shape == (4 + 1 * (TITLE_HEIGHT + 192 + 4), 4 + 2 * (256 + 4), 3)


def test_image_grid_places_cells_row_major():
    ones = [np.full((2, 3, 3), k, np.uint8) for k in (10, 20, 30)]
    grid = image_grid(ones, cols=2)
    assert grid.shape == (4 + 2 * 6, 4 + 2 * 7, 3)
    assert grid[4, 4, 0] == 10 and grid[4, 11, 0] == 20 and grid[10, 4, 0] == 30


def test_missing_split_is_a_config_error(tmp_path):
    tiny = make_tiny(tmp_path)
    cfg = load_config(tiny.config, ["data.test=false"]).cfg
    with pytest.raises(ConfigError, match="no data.test dataset"):
        sample_dataset(cfg, "test")


def test_the_report_names_the_picture_each_image_is_in(tmp_path):
    tiny = make_tiny(tmp_path)
    samples = sample_dataset(load_config(tiny.config).cfg, "train", num=2, seed=0)
    grid = DatasetPictures("train", samples, write_samples(samples, tmp_path / "g", grid=True),
                           grid=True).to_dict()
    assert grid["split"] == "train" and grid["out"] == [str(tmp_path / "g" / "grid.png")]
    assert [im["picture"] for im in grid["images"]] == [str(tmp_path / "g" / "grid.png")] * 2
    each = DatasetPictures("val", samples, write_samples(samples, tmp_path / "e")).to_dict()
    assert each["out"] == [str(tmp_path / "e" / "000_a.png"), str(tmp_path / "e" / "001_b.png")]
    assert [im["picture"] for im in each["images"]] == each["out"]
    assert [im["file"] for im in each["images"]] == [s.view.filename for s in samples]
