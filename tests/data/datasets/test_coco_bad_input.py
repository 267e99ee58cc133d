"""CocoDataset on bad input: each gives a DataError naming the file and the annotation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detcli.data.datasets import CocoDataset
from detcli.errors import DataError
from tests.data.datasets.coco_files import coco_dict, write_coco


def load(path, **kwargs) -> CocoDataset:
    return CocoDataset(ann_file=str(path), img_prefix="imgs", **kwargs)


def error_for(tmp_path, data) -> str:
    path = write_coco(tmp_path, data)
    with pytest.raises(DataError) as err:
        load(path)
    return str(err.value)


def with_ann(field: str, value) -> dict:
    data = coco_dict()
    data["annotations"][3][field] = value  # annotation 4, image 20 (b.jpg, 60x50)
    return data


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=f"annotation file {tmp_path / 'nope.json'} does not exist"):
        load(tmp_path / "nope.json")


def test_empty_file(tmp_path):
    assert error_for(tmp_path, "  \n") == f"annotation file {tmp_path / 'ann.json'} is empty"


def test_invalid_json(tmp_path):
    message = error_for(tmp_path, '{"images": [')
    assert message.startswith(f"annotation file {tmp_path / 'ann.json'} is not valid JSON: ")


@pytest.mark.parametrize("data, expected", [
    ([1, 2], "its top level is a list, not an object"),
    ({"images": [], "annotations": []}, "it has no `categories` list (top-level keys: annotations, images)"),
    ({"info": {}}, "it has no `images` list (top-level keys: info)"),
])
def test_json_that_is_not_coco(tmp_path, data, expected):
    message = error_for(tmp_path, data)
    assert message == f"{tmp_path / 'ann.json'} is not a COCO annotation file: {expected}"


def test_no_images(tmp_path):
    data = {**coco_dict(), "images": [], "annotations": []}
    assert error_for(tmp_path, data) == f"annotation file {tmp_path / 'ann.json'} has no images"


def test_annotation_without_bbox_names_it(tmp_path):
    data = coco_dict()
    del data["annotations"][2]["bbox"]
    assert error_for(tmp_path, data).endswith("ann.json: annotations[2] (id 3) has no `bbox`")


def test_malformed_bbox_names_the_annotation(tmp_path):
    message = error_for(tmp_path, with_ann("bbox", [1, 2, 3]))
    assert message.endswith("ann.json: annotation 4 has bbox [1, 2, 3]; "
                            "it must be four numbers [x, y, width, height]")


def test_duplicate_annotation_ids(tmp_path):
    message = error_for(tmp_path, with_ann("id", 1))
    assert message.endswith("annotation ids must be unique; 1 repeat, e.g. id 1 (2 times)")


def test_nan_coordinates(tmp_path):
    message = error_for(tmp_path, with_ann("bbox", [math.nan, 2, 3, 4]))
    assert f"{tmp_path / 'ann.json'}: 1 bad annotation or image:" in message
    assert (f"{tmp_path / 'ann.json'}: annotation 4, image b.jpg: box [nan, 2, nan, 6] "
            "has NaN or infinite coordinates") in message


def test_non_positive_width(tmp_path):
    message = error_for(tmp_path, with_ann("bbox", [5, 5, 0, 4]))
    assert ("ann.json: annotation 4, image b.jpg: box [5, 5, 5, 9] (x1 y1 x2 y2) has "
            "non-positive width or height") in message


def test_box_outside_the_image(tmp_path):
    message = error_for(tmp_path, with_ann("bbox", [50, 5, 20, 4]))  # x2 = 70 > width 60 + 1
    assert "ann.json: annotation 4, image b.jpg: box [50, 5, 70, 9] lies outside its 60x50 image" in message


def test_box_within_the_rounding_tolerance_is_kept(tmp_path):
    path = write_coco(tmp_path, with_ann("bbox", [50, 5, 10.5, 4]))  # x2 = 60.5
    np.testing.assert_allclose(load(path).get_ann_info(1)["bboxes"], [[50, 5, 60.5, 9]])


def test_unknown_image(tmp_path):
    message = error_for(tmp_path, with_ann("image_id", 99))
    assert "ann.json: annotation 4: image_id 99 is not in `images`" in message


def test_unknown_category(tmp_path):
    message = error_for(tmp_path, with_ann("category_id", 5))
    assert "ann.json: annotation 4, image b.jpg: category_id 5 is not in `categories`" in message


def test_every_error_is_counted_and_the_first_five_listed(tmp_path):
    data = coco_dict()
    for k in range(4, 11):
        data["annotations"].append({"id": 100 + k, "image_id": 10, "category_id": 1,
                                    "bbox": [0, 0, -1, 3], "area": 3})
    message = error_for(tmp_path, data)
    assert "7 bad annotations or images" in message
    assert "annotation 104," in message and "annotation 108," in message
    assert "annotation 109," not in message and message.endswith("... and 2 more problems")


def test_skip_drops_the_images_with_errors_and_lists_them(tmp_path):
    data = with_ann("bbox", [5, 5, -2, 4])  # image 20 bad
    data["annotations"].append({"id": 9, "image_id": 77, "category_id": 1, "bbox": [0, 0, 2, 2]})
    ds = load(write_coco(tmp_path, data), on_bad="skip")
    assert [i["id"] for i in ds.img_infos] == [10]
    assert ds.filter_report.dropped_bad == 1 and ds.filter_report.dropped_empty == 1
    assert sorted(p.kind for p in ds.problems) == ["non_positive_box", "unknown_image"]
    assert all(p.file == str(tmp_path / "ann.json") for p in ds.problems)


def test_test_mode_accepts_a_file_without_annotations(tmp_path):
    data = coco_dict()
    del data["annotations"]
    ds = load(write_coco(tmp_path, data), test_mode=True)
    assert len(ds) == 3 and ds.get_ann_info(0)["bboxes"].shape == (0, 4)
    with pytest.raises(DataError, match="it has no `annotations` list"):
        load(tmp_path / "ann.json")
