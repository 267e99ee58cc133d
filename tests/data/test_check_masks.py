"""det data check on segmentations: each kind of bad mask, named with its file and annotation."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from detcli.data.check import check_dataset
from detcli.data.datasets import CocoDatasetConfig
from detcli.data.mask_check import MASK_BOX_MIN_IOU, crossing_edges
from detcli.data.synth import make_synthetic_dataset

SQUARE = [10, 10, 20, 10, 20, 20, 10, 20]  # the box [10, 10, 10, 10] (x y w h)


def checked(tmp_path, segmentations, crowd=()):
    """A 40 x 60 image, one annotation with box [10, 10, 10, 10] per segmentation."""
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((40, 60, 3), np.uint8))
    anns = [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 10, 10],
             "area": 100.0, "iscrowd": int(k in crowd),
             **({} if s is None else {"segmentation": s})} for k, s in enumerate(segmentations)]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 60, "height": 40}],
            "categories": [{"id": 1, "name": "thing"}], "annotations": anns}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    report = check_dataset(CocoDatasetConfig(ann_file=str(path), img_prefix=str(tmp_path)))
    return report, {p.ann_id: p for p in report.problems}


def test_good_segmentations_have_no_problem(tmp_path):
    # the same square as an uncompressed RLE: 410 zeros (columns 0-9, rows 0-9 of column 10),
    # then per column 10..19 ten ones and thirty zeros, the last zero run to the end
    runs = [410] + [10, 30] * 9 + [10, 1620]
    assert sum(runs) == 40 * 60
    report, _ = checked(tmp_path, [[SQUARE], {"size": [40, 60], "counts": runs}])
    assert report.ok and report.problems == []


def test_each_kind_of_bad_segmentation_is_found(tmp_path):
    report, by_id = checked(tmp_path, [
        [SQUARE],  # 1: fine
        [[10, 10, 20, 10]],  # 2: two points
        [[10, 10, 15, 15, 20, 20]],  # 3: collinear: zero area
        [[10, 10, 20, 10, 10, 20, 20, 20]],  # 4: a bow tie
        {"size": [30, 60], "counts": [1800]},  # 5: RLE of another size
        [[40, 25, 50, 25, 50, 35, 40, 35]],  # 6: a mask nowhere near its box
        [[10, 10, 20, 10, 20]],  # 7: odd coordinate count
        "polygon",  # 8: not a segmentation
        None,  # 9: none, while the others have one
        {"counts": [1]},  # 10: a dict that is not an RLE
    ])
    assert report.problem_counts()["bad_segmentations"] == 9
    expected = {
        "annotation 2": ("degenerate_polygon", "warning", "polygon part 0 has 2 points"),
        "annotation 3": ("degenerate_polygon", "warning", "polygon part 0 has zero area"),
        "annotation 4": ("self_intersecting_polygon", "warning",
                         "polygon part 0 intersects itself (edges 1 and 3 cross)"),
        "annotation 5": ("rle_size_mismatch", "error",
                         "RLE of size [30, 60] (h, w) on an image of 40x60 (h x w)"),
        "annotation 6": ("mask_box_mismatch", "warning",
                         "the mask's extent [40, 25, 50, 35] and the box [10, 10, 20, 20] overlap "
                         f"with IoU 0.00 (under {MASK_BOX_MIN_IOU})"),
        "annotation 7": ("bad_segmentation", "error", "polygon part 0 has 5 coordinates, an odd"),
        "annotation 8": ("bad_segmentation", "error", "`segmentation` is a str"),
        "annotation 9": ("bad_segmentation", "error", "has no `segmentation` while other"),
        "annotation 10": ("bad_segmentation", "error", "`segmentation` is a dict without `size`"),
    }
    assert set(by_id) == set(expected)
    for ann_id, (kind, severity, message) in expected.items():
        problem = by_id[ann_id]
        assert (problem.kind, problem.severity) == (kind, severity), ann_id
        assert problem.message.startswith(message), (ann_id, problem.message)
        assert problem.file == str(tmp_path / "ann.json") and problem.image == "a.jpg"
    assert not report.ok


def test_crowd_regions_are_checked_and_a_cheap_check_skips_masks(tmp_path):
    report, by_id = checked(tmp_path, [[SQUARE], {"size": [1, 1], "counts": [1]}], crowd=(1,))
    assert by_id["annotation 2"].kind == "rle_size_mismatch"
    path = tmp_path / "ann.json"
    cheap = check_dataset(CocoDatasetConfig(ann_file=str(path), img_prefix=str(tmp_path)),
                          cheap=True)
    assert cheap.problem_counts()["bad_segmentations"] == 0


@pytest.mark.parametrize("ring, crossing", [
    ([[0, 0], [4, 0], [0, 4], [4, 4]], (1, 3)),  # bow tie
    ([[0, 0], [4, 0], [4, 4], [0, 4]], None),  # square
    ([[1, 1], [9, 1], [9, 9], [7, 9], [7, 3], [3, 3], [3, 9], [1, 9]], None),  # concave U
    ([[0, 0], [2, 0], [2, 2], [0, 2], [0, 0], [1, 1]], None),  # touching at a vertex
])
def test_crossing_edges(ring, crossing):
    assert crossing_edges(np.array(ring, dtype=np.float64)) == crossing


def test_the_synthetic_dataset_has_clean_masks(tmp_path):
    synth = make_synthetic_dataset(tmp_path, num_train=6, num_val=0, image_size=96, seed=2)
    report = check_dataset(CocoDatasetConfig(ann_file=str(synth.ann_file("train")),
                                             img_prefix=str(synth.img_prefix("train"))))
    assert report.ok and report.problem_counts()["bad_segmentations"] == 0
