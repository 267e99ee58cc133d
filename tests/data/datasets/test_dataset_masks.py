"""Instance masks from the datasets: COCO polygons and RLE (both kinds), YOLO polygon lines,
and a clear error from VOC and from YOLO box lines when a pipeline loads masks."""

from __future__ import annotations

import json
import re

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from detcli.data.datasets import CocoDataset, VOCDataset, YOLODataset
from detcli.data.masks_io import NoMasks
from detcli.data.transforms import LoadAnnotations
from detcli.errors import DataError
from tests.data.datasets.test_voc_dataset import SIZE, obj, voc_folder
from tests.data.datasets.test_yolo_dataset import NAMES, yolo_folder

MASKS = [LoadAnnotations(with_mask=True)]


def rect(x1, y1, x2, y2, h, w):
    out = np.zeros((h, w), np.uint8)
    out[y1:y2, x1:x2] = 1
    return out


def coco_with_masks(tmp_path):
    """One 30 x 40 image: a polygon, a compressed RLE, an uncompressed RLE and a crowd RLE."""
    h, w = 30, 40
    compressed = mask_utils.encode(np.asfortranarray(rect(20, 5, 30, 15, h, w)))
    uncompressed = {"size": [h, w], "counts": [2 * h + 20, 5, h - 5, 5, (w - 4) * h - 20 + 25]}
    crowd = {"size": [h, w], "counts": [h * w - 10, 10]}
    anns = [
        (1, [0, 0, 10, 10], [[0, 0, 10, 0, 10, 10, 0, 10]], 0),
        (2, [20, 5, 10, 10], {"size": [h, w], "counts": compressed["counts"].decode()}, 0),
        (3, [2, 20, 2, 5], uncompressed, 0),
        (4, [39, 20, 1, 10], crowd, 1),
    ]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": w, "height": h}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": b, "area": 1.0,
                             "segmentation": s, "iscrowd": c} for i, b, s, c in anns]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return CocoDataset(ann_file=str(path), img_prefix=str(tmp_path), pipeline=MASKS)


def test_coco_polygons_and_both_rle_kinds_become_masks_aligned_with_boxes(tmp_path):
    ds = coco_with_masks(tmp_path)
    assert ds.has_masks and len(ds.get_ann_masks(0)) == 3  # the crowd region's mask is not used
    out = ds.prepare(0)
    assert out["gt_bboxes"].shape == (3, 4) and out["gt_bboxes_ignore"].shape == (1, 4)
    masks = out["gt_masks"].masks
    np.testing.assert_array_equal(masks[0], rect(0, 0, 10, 10, 30, 40))
    np.testing.assert_array_equal(masks[1], rect(20, 5, 30, 15, 30, 40))
    # uncompressed, column-major: columns 0-1 and rows 0-19 of column 2 are 0, then rows 20-24
    # of columns 2 and 3 are 1
    np.testing.assert_array_equal(masks[2], rect(2, 20, 4, 25, 30, 40))
    assert [r.name for r in ds.mask_records(0)] == [f"annotation {k}" for k in (1, 2, 3, 4)]


def test_a_box_only_coco_file_has_no_segmentation_to_load(tmp_path):
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    ds = CocoDataset(ann_file=str(path), img_prefix=str(tmp_path), pipeline=MASKS)
    with pytest.raises(DataError, match=r"ann\.json: annotation 5 has no `segmentation`"):
        ds[0]


def test_voc_says_it_has_no_masks(tmp_path):
    root = voc_folder(tmp_path, {"000001": SIZE + obj("dog", (1, 2, 30, 40))})
    ds = VOCDataset(ann_file=str(root / "ImageSets" / "Main" / "train.txt"),
                    img_prefix=str(root), pipeline=MASKS)
    assert not ds.has_masks and isinstance(ds.get_ann_masks(0), NoMasks)
    with pytest.raises(DataError, match=r"VOCDataset .*train\.txt has no instance masks: VOC XML "
                                        r"annotations hold boxes only") as info:
        ds[0]
    assert "LoadAnnotations" in str(info.value)  # the step that asked for them


def test_yolo_polygon_lines_are_masks_and_box_lines_say_they_have_none(tmp_path):
    images = yolo_folder(tmp_path, {  # 100 wide, 50 high
        "a.jpg": "1 0.1 0.2 0.5 0.2 0.5 0.8 0.1 0.8\n",  # x in [10, 50], y in [10, 40]
        "b.jpg": "0 0.5 0.5 0.2 0.4\n2 0.1 0.2 0.3 0.2 0.2 0.6\n",
    })
    ds = YOLODataset(img_prefix=str(images), classes=NAMES, pipeline=MASKS)
    assert ds.get_ann_masks(0) == [[[10.0, 10.0, 50.0, 10.0, 50.0, 40.0, 10.0, 40.0]]]
    out = ds.prepare(0)
    np.testing.assert_allclose(out["gt_bboxes"], [[10, 10, 50, 40]])
    np.testing.assert_array_equal(out["gt_masks"].masks[0], rect(10, 10, 50, 40, 50, 100))
    label_file = tmp_path / "labels" / "train" / "b.txt"
    with pytest.raises(DataError, match=re.escape(f"{label_file}: line 1 is a box line (class "
                                                  "cx cy w h), not a polygon")):
        ds.prepare(1)


def test_dropping_images_keeps_the_masks_with_their_boxes(tmp_path):
    data = {"images": [{"id": k, "file_name": f"{k}.jpg", "width": 40, "height": 30}
                       for k in (1, 2)],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": 10 + k, "image_id": k, "category_id": 1,
                             "bbox": [k, k, 5, 5], "area": 25.0,
                             "segmentation": [[k, k, k + 5, k, k + 5, k + 5, k, k + 5]]}
                            for k in (1, 2)]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    ds = CocoDataset(ann_file=str(path), img_prefix=str(tmp_path))
    ds.drop_images([0])
    assert ds.get_ann_masks(0) == [[[2, 2, 7, 2, 7, 7, 2, 7]]]
    assert ds.get_ann_names(0) == ["annotation 12"]
    np.testing.assert_array_equal(ds.get_ann_info(0)["bboxes"], [[2, 2, 7, 7]])
