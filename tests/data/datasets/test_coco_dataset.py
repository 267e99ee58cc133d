"""CocoDataset: label order, class selection, crowd boxes, filtering and the results dict."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from detcli.data.datasets import CocoDataset
from detcli.errors import DataError
from tests.data.datasets.coco_files import coco_dict, write_coco


def build(tmp_path, data=None, **kwargs) -> CocoDataset:
    path = write_coco(tmp_path, coco_dict() if data is None else data)
    return CocoDataset(ann_file=str(path), img_prefix=str(tmp_path / "imgs"), **kwargs)


def test_non_contiguous_category_ids_map_in_ascending_id_order(tmp_path):
    ds = build(tmp_path)
    assert ds.CLASSES == ("a", "b", "c")  # ids 1, 3, 7
    assert ds.cat_ids == [1, 3, 7]
    assert ds.num_classes == 3
    info = ds.get_ann_info(0)  # image 10
    np.testing.assert_array_equal(info["labels"], [2, 0])  # category 7 -> 2, category 1 -> 0
    np.testing.assert_array_equal(ds.get_ann_info(1)["labels"], [1])  # category 3 -> 1


def test_xywh_becomes_xyxy_without_minus_one(tmp_path):
    info = build(tmp_path).get_ann_info(0)
    np.testing.assert_array_equal(info["bboxes"], [[10, 20, 40, 60], [0, 0, 5, 6]])
    assert info["bboxes"].dtype == np.float32 and info["labels"].dtype == np.int64
    np.testing.assert_allclose(build(tmp_path).get_ann_info(1)["bboxes"], [[1.5, 2.5, 11.5, 22.5]])


def test_classes_select_and_order_by_name(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        ds = build(tmp_path, classes=["c", "a"])
    assert ds.CLASSES == ("c", "a") and ds.cat_ids == [7, 1]
    np.testing.assert_array_equal(ds.get_ann_info(0)["labels"], [0, 1])
    assert ds.get_ann_info(0)["bboxes_ignore"].shape == (0, 4)  # the crowd "b" is not selected
    assert len(ds) == 1  # image 20 held only "b": empty now, filtered
    assert ds.filter_report.dropped_unselected_boxes == 2
    assert "skipped 2 boxes of classes not in `classes`" in caplog.text


def test_unknown_class_name_lists_the_file_names_and_suggests(tmp_path):
    path = write_coco(tmp_path, coco_dict())
    with pytest.raises(DataError) as err:
        CocoDataset(ann_file=str(path), img_prefix="imgs", classes=["a", "cc"])
    assert str(err.value) == (f"class 'cc' in `classes` is not a category of {path}; "
                              "the file has: c, a, b. Did you mean 'c'?")


def test_repeated_class_name_is_an_error(tmp_path):
    with pytest.raises(DataError, match="`classes` names 'a' more than once"):
        build(tmp_path, classes=["a", "b", "a"])


def test_crowd_boxes_become_ignore_boxes(tmp_path):
    info = build(tmp_path).get_ann_info(0)
    np.testing.assert_array_equal(info["bboxes_ignore"], [[50, 10, 90, 40]])
    assert len(info["bboxes"]) == 2 and len(info["labels"]) == 2


def test_filter_empty_gt_counts(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        ds = build(tmp_path)
    assert [i["id"] for i in ds.img_infos] == [10, 20]
    report = ds.filter_report
    assert (report.num_images, report.kept, report.dropped_empty) == (3, 2, 1)
    assert "kept 2 of 3 images; dropped 1 without GT (filter_empty_gt)" in caplog.text
    assert len(build(tmp_path, filter_empty_gt=False)) == 3


def test_min_size_drops_small_images_and_test_mode_keeps_all(tmp_path):
    ds = build(tmp_path, filter_empty_gt=False, min_size=45)  # 40x40 dropped, 60x50 kept
    assert [i["id"] for i in ds.img_infos] == [10, 20]
    assert ds.filter_report.dropped_small == 1
    ds = build(tmp_path, min_size=1000, test_mode=True)
    assert len(ds) == 3 and ds.filter_report.kept == 3


def test_tiny_boxes_are_dropped_with_a_count(tmp_path, caplog):
    data = coco_dict()
    data["annotations"][1]["bbox"] = [0, 0, 0.5, 6]  # under one pixel wide
    data["annotations"][3]["area"] = 0
    with caplog.at_level(logging.INFO):
        ds = build(tmp_path, data)
    assert ds.filter_report.dropped_tiny_boxes == 2
    assert "dropped 2 boxes under 1 pixel wide or high" in caplog.text
    np.testing.assert_array_equal(ds.get_ann_info(0)["labels"], [2])
    assert [p.kind for p in ds.problems] == ["tiny_box", "tiny_box"]
    assert all(p.severity == "warning" for p in ds.problems)


def test_results_dict_follows_the_data_contract(tmp_path):
    ds = build(tmp_path)
    results = ds[1]
    assert results["img_info"] == {"id": 20, "file_name": "b.jpg",
                                   "filename": str(tmp_path / "imgs" / "b.jpg"),
                                   "height": 50, "width": 60}
    assert results["image_id"] == 20 and results["img_prefix"] == str(tmp_path / "imgs")
    assert set(results["ann_info"]) == {"bboxes", "labels", "bboxes_ignore", "masks", "ann_ids",
                                        "source"}
    assert len(results["ann_info"]["masks"]) == len(results["ann_info"]["bboxes"])
    assert results["ann_info"]["source"] == ds.source
    assert ds.flag.tolist() == [1, 1]  # both images are wider than high
    assert ds.get_cat_ids(0) == [0, 2]


def test_pipeline_runs_in_order_and_a_rejected_sample_is_redrawn(tmp_path):
    seen = []

    def reject_b(results):
        seen.append(results["img_info"]["file_name"])
        return None if results["img_info"]["file_name"] == "b.jpg" else results

    ds = build(tmp_path, pipeline=[reject_b])
    np.random.seed(0)
    assert ds[1]["img_info"]["file_name"] == "a.jpg"  # same aspect-ratio group
    assert seen[0] == "b.jpg"
    with pytest.raises(DataError, match="the pipeline rejected"):
        build(tmp_path, pipeline=[reject_b], test_mode=True)[1]


def test_coco_index_is_built_silently(tmp_path, capsys):
    ds = build(tmp_path)
    assert capsys.readouterr().out == ""
    assert sorted(ds.coco.getImgIds()) == [10, 20, 30]
