"""VOCDataset on a tiny VOC2007-style folder written by the test."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.data.datasets import VOC_CLASSES, VOCDataset
from detcli.errors import DataError


def obj(name: str, box: tuple, difficult: int = 0) -> str:
    xmin, ymin, xmax, ymax = box
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
            "</bndbox></object>")


def voc_folder(tmp_path: Path, annotations: dict[str, str]) -> Path:
    """VOC2007/ with ImageSets/Main/train.txt listing the keys, and their XML bodies."""
    root = tmp_path / "VOC2007"
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main" / "train.txt").write_text("".join(f"{k}\n" for k in annotations))
    for image_id, body in annotations.items():
        if body is not None:
            (root / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{body}</annotation>")
    return root


SIZE = "<size><width>100</width><height>80</height><depth>3</depth></size>"


def load(root: Path, **kwargs) -> VOCDataset:
    return VOCDataset(ann_file=str(root / "ImageSets" / "Main" / "train.txt"), img_prefix=str(root),
                      **kwargs)


def test_voc_loads_boxes_labels_and_difficult_as_ignore(tmp_path):
    root = voc_folder(tmp_path, {
        "000001": SIZE + obj("dog", (10, 20, 50, 60)) + obj("person", (5, 5, 30, 30), difficult=1),
        "000002": SIZE + obj("aeroplane", (1, 2, 99, 80)),
    })
    ds = load(root)
    assert ds.CLASSES == VOC_CLASSES and ds.num_classes == 20
    info = ds.get_ann_info(0)
    np.testing.assert_array_equal(info["bboxes"], [[10, 20, 50, 60]])  # as written, no -1
    np.testing.assert_array_equal(info["labels"], [11])  # "dog" is the 12th VOC class
    np.testing.assert_array_equal(info["bboxes_ignore"], [[5, 5, 30, 30]])
    np.testing.assert_array_equal(ds.get_ann_info(1)["labels"], [0])
    assert ds.img_infos[0] == {"id": 0, "file_name": "JPEGImages/000001.jpg",
                               "filename": str(root / "JPEGImages" / "000001.jpg"),
                               "height": 80, "width": 100}


def test_voc_custom_classes_skip_other_names_and_flag_typos(tmp_path, caplog):
    root = voc_folder(tmp_path, {"a": SIZE + obj("cat", (1, 1, 9, 9)) + obj("dgo", (2, 2, 8, 8))
                                 + obj("tree", (3, 3, 7, 7))})
    with caplog.at_level(logging.INFO):
        ds = load(root, classes=["dog", "cat"])
    np.testing.assert_array_equal(ds.get_ann_info(0)["labels"], [1])
    assert ds.filter_report.dropped_unselected_boxes == 2
    assert "1 objects named 'dgo' are skipped: not in `classes` (did you mean 'dog'?)" in caplog.text
    assert any(r.levelname == "WARNING" and "'dgo'" in r.getMessage() for r in caplog.records)


def test_voc_size_from_the_image_when_the_xml_has_none(tmp_path):
    root = voc_folder(tmp_path, {"x": obj("cat", (1, 1, 30, 20))})
    cv2.imwrite(str(root / "JPEGImages" / "x.jpg"), np.zeros((48, 64, 3), np.uint8))
    ds = load(root)
    assert (ds.img_infos[0]["width"], ds.img_infos[0]["height"]) == (64, 48)


def test_voc_missing_and_malformed_xml_name_the_file(tmp_path):
    root = voc_folder(tmp_path, {"ok": SIZE + obj("cat", (1, 1, 9, 9)), "gone": None,
                                 "broken": SIZE + "<object><name>cat</name></object>"})
    with pytest.raises(DataError) as err:
        load(root)
    message = str(err.value)
    assert f"{root / 'Annotations' / 'gone.xml'}: image JPEGImages/gone.jpg: annotation file does not exist" in message
    assert f"{root / 'Annotations' / 'broken.xml'}: image JPEGImages/broken.jpg: object 0 (cat) has no <bndbox>" in message
    ds = load(root, on_bad="skip")
    assert [i["file_name"] for i in ds.img_infos] == ["JPEGImages/ok.jpg"]


def test_voc_bad_box_names_the_xml_and_object(tmp_path):
    root = voc_folder(tmp_path, {"a": SIZE + obj("cat", (1, 1, 9, 9)) + obj("cat", (50, 10, 40, 20))})
    with pytest.raises(DataError, match=r"a\.xml: object 1, image JPEGImages/a\.jpg: box \[50, 10, 40, 20\]"):
        load(root)


def test_voc_missing_image_set(tmp_path):
    with pytest.raises(DataError, match="image-set file .*train.txt does not exist"):
        VOCDataset(ann_file=str(tmp_path / "train.txt"), img_prefix=str(tmp_path))
