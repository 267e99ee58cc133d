"""The synthetic dataset: deterministic bytes, tight boxes, clear colours, a valid COCO file."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.data.datasets import CocoDataset
from detcli.data.synth import SYNTH_CLASSES, ensure_synthetic_dataset, make_synthetic_dataset
from detcli.errors import DataError

SMALL = {"num_train": 8, "num_val": 3, "image_size": 96}


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    one = files(make_synthetic_dataset(tmp_path / "one", seed=3, **SMALL).root)
    two = files(make_synthetic_dataset(tmp_path / "two", seed=3, **SMALL).root)
    other = files(make_synthetic_dataset(tmp_path / "other", seed=4, **SMALL).root)
    assert len(one) == 8 + 3 + 2 + 1  # images, two annotation files, the marker
    assert one == two
    assert set(one) == set(other)
    changed = [name for name in one if one[name] != other[name]]
    assert "annotations/train.json" in changed and "train/000001.jpg" in changed


def test_annotations_are_coco_with_the_shape_classes(tmp_path):
    synth = make_synthetic_dataset(tmp_path, num_train=40, num_val=2, image_size=128, seed=0)
    data = json.loads(synth.ann_file("train").read_text())
    assert [c["name"] for c in data["categories"]] == ["square", "circle", "triangle"]
    assert synth.classes == SYNTH_CLASSES
    per_image = {img["id"]: 0 for img in data["images"]}
    for ann in data["annotations"]:
        per_image[ann["image_id"]] += 1
    assert 0 in per_image.values() and max(per_image.values()) <= 4  # some images are empty
    sizes = {(img["width"], img["height"]) for img in data["images"]}
    assert len(sizes) > 3 and all(80 <= s <= 128 for wh in sizes for s in wh)
    ds = CocoDataset(ann_file=str(synth.ann_file("train")), img_prefix=str(synth.img_prefix("train")),
                     filter_empty_gt=False)  # would raise on any box outside its image
    assert len(ds) == 40 and ds.CLASSES == SYNTH_CLASSES
    boxes = np.array([a["bbox"] for a in data["annotations"]])  # (A, 4) x y w h
    assert boxes[:, 2:].min() >= 12 and boxes[:, 2:].max() >= 40  # several sizes
    ratios = boxes[:, 2] / boxes[:, 3]
    assert ratios.min() < 0.75 and ratios.max() > 1.33  # several aspect ratios


def test_boxes_are_tight_and_each_class_has_its_colour(tmp_path):
    synth = make_synthetic_dataset(tmp_path, num_train=20, num_val=0, image_size=128, seed=1,
                                   image_format="png")
    data = json.loads(synth.ann_file("train").read_text())
    names = {img["id"]: img["file_name"] for img in data["images"]}
    dominant_channel = {1: 2, 2: 1, 3: 0}  # BGR: square red, circle green, triangle blue
    for ann in data["annotations"]:
        img = cv2.imread(str(synth.img_prefix("train") / names[ann["image_id"]])).astype(int)
        x, y, w, h = ann["bbox"]
        centre = img[y + h // 2, x + w // 2]  # inside every shape
        assert int(np.argmax(centre)) == dominant_channel[ann["category_id"]]
        assert centre.max() - np.sort(centre)[1] > 80
        # Tight: the shape's colour reaches every side of the box (first/last row and column).
        colour = img[y:y + h, x:x + w, dominant_channel[ann["category_id"]]]  # (h, w)
        others = np.delete(img[y:y + h, x:x + w], dominant_channel[ann["category_id"]], axis=2).max(axis=2)
        shape = colour - others > 60  # (h, w)
        assert shape[0].any() and shape[-1].any() and shape[:, 0].any() and shape[:, -1].any()


def test_ensure_generates_once_and_regenerates_on_other_parameters(tmp_path):
    root = tmp_path / "synth"
    first = ensure_synthetic_dataset(root, **SMALL)
    marker_time = (root / "synth.json").stat().st_mtime_ns
    assert ensure_synthetic_dataset(root, **SMALL) == first
    assert (root / "synth.json").stat().st_mtime_ns == marker_time  # not rewritten
    ensure_synthetic_dataset(root, **{**SMALL, "num_train": 5})
    assert len(json.loads((root / "annotations" / "train.json").read_text())["images"]) == 5
    assert len(list((root / "train").iterdir())) == 5  # the old copy was replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]  # no staging left behind


def test_ensure_refuses_a_folder_that_is_not_synthetic(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="exists and is not a synthetic dataset"):
        ensure_synthetic_dataset(tmp_path, **SMALL)


def test_bad_parameters(tmp_path):
    with pytest.raises(DataError, match="image_size must be between 64 and 4096 pixels, got 10"):
        make_synthetic_dataset(tmp_path, image_size=10)
    with pytest.raises(DataError, match="image_format must be 'jpg' or 'png', not 'gif'"):
        make_synthetic_dataset(tmp_path, image_format="gif")
