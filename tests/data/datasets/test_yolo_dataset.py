"""YOLODataset on a tiny Ultralytics-style folder written by the test."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.data.datasets import YOLODataset
from detcli.errors import DataError
from tests.data.transforms.images import exif_app1, jpeg_bytes, noise_image, write

NAMES = ["cat", "dog", "bird"]


def yolo_folder(tmp_path: Path, labels: dict[str, str | None]) -> Path:
    """images/train/<name> (100 wide, 50 high) and labels/train/<stem>.txt where given."""
    images, label_dir = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    images.mkdir(parents=True)
    label_dir.mkdir(parents=True)
    for name, text in labels.items():
        cv2.imwrite(str(images / name), np.zeros((50, 100, 3), np.uint8))
        if text is not None:
            (label_dir / Path(name).with_suffix(".txt")).write_text(text)
    return images


def test_yolo_boxes_in_pixels(tmp_path, caplog):
    images = yolo_folder(tmp_path, {
        "a.jpg": "0 0.5 0.5 0.2 0.4\n2 0.1 0.1 0.1 0.1\n",
        "b.png": "1 0.25 0.2 0.75 0.2 0.5 0.8\n",  # a polygon: its bounding box
        "c.jpg": None,  # no label file: background
    })
    with caplog.at_level(logging.INFO):
        ds = YOLODataset(img_prefix=str(images), classes=NAMES, filter_empty_gt=False)
    assert [i["file_name"] for i in ds.img_infos] == ["a.jpg", "b.png", "c.jpg"]
    assert ds.CLASSES == tuple(NAMES)
    info = ds.get_ann_info(0)
    np.testing.assert_allclose(info["bboxes"], [[40, 15, 60, 35], [5, 2.5, 15, 7.5]])
    np.testing.assert_array_equal(info["labels"], [0, 2])
    np.testing.assert_allclose(ds.get_ann_info(1)["bboxes"], [[25, 10, 75, 40]])
    assert ds.get_ann_info(2)["bboxes"].shape == (0, 4)
    assert "1 images have no label file and count as background" in caplog.text


def test_yolo_uses_the_displayed_size_of_an_exif_rotated_jpeg(tmp_path):
    images = yolo_folder(tmp_path, {})
    data = jpeg_bytes(noise_image(h=20, w=40))
    write(images / "r.jpg", data[:2] + exif_app1(6) + data[2:])  # displayed 20 wide, 40 high
    (tmp_path / "labels" / "train" / "r.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    ds = YOLODataset(img_prefix=str(images), classes=NAMES)
    np.testing.assert_allclose(ds.get_ann_info(0)["bboxes"], [[5, 10, 15, 30]])


def test_yolo_label_prefix_and_image_list(tmp_path):
    images = tmp_path / "pics"
    images.mkdir()
    cv2.imwrite(str(images / "x.jpg"), np.zeros((50, 100, 3), np.uint8))
    cv2.imwrite(str(images / "y.jpg"), np.zeros((50, 100, 3), np.uint8))
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "y.txt").write_text("1 0.5 0.5 1 1\n")
    (tmp_path / "list.txt").write_text("y.jpg\n")
    ds = YOLODataset(img_prefix=str(images), classes=NAMES, label_prefix=str(tmp_path / "txt"),
                     ann_file=str(tmp_path / "list.txt"))
    assert len(ds) == 1
    np.testing.assert_allclose(ds.get_ann_info(0)["bboxes"], [[0, 0, 100, 50]])
    with pytest.raises(DataError, match="its path has no `images` folder to swap for `labels`"):
        YOLODataset(img_prefix=str(images), classes=NAMES)


def test_yolo_bad_lines_name_the_file_and_line(tmp_path):
    images = yolo_folder(tmp_path, {"a.jpg": "0 0.5 0.5 0.2 0.4\n3 0.5 0.5 0.1 0.1\n0 0.5 0.5\n"
                                             "x 1 2 3 4\n0 0.9 0.5 0.4 0.2\n"})
    with pytest.raises(DataError) as err:
        YOLODataset(img_prefix=str(images), classes=NAMES)
    label = tmp_path / "labels" / "train" / "a.txt"
    assert str(err.value).splitlines()[1:] == [
        f"{label}: line 2, image a.jpg: class 3 is not one of the 3 classes (0 to 2)",
        f"{label}: line 3, image a.jpg: has 3 values; expected `class cx cy w h` (5) or a polygon",
        f"{label}: line 4, image a.jpg: 'x 1 2 3 4' is not numbers",
        f"{label}: line 5, image a.jpg: box [70, 20, 110, 30] lies outside its 100x50 image",
    ]


def test_yolo_needs_class_names(tmp_path):
    images = yolo_folder(tmp_path, {"a.jpg": ""})
    with pytest.raises(DataError, match="`classes` must list the class names"):
        YOLODataset(img_prefix=str(images), classes=[])
