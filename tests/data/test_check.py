"""check_dataset: every kind of problem of a deliberately broken dataset, counted and listed."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from detcli.data.check import check_dataset, write_problem_list
from detcli.data.datasets import CocoDatasetConfig
from detcli.data.synth import make_synthetic_dataset


def broken_dataset(root: Path) -> Path:
    """Seven images, one problem of each kind (see the expected counts below)."""
    imgs = root / "imgs"
    imgs.mkdir(parents=True)
    ok, jpg = cv2.imencode(".jpg", np.full((40, 60, 3), 128, np.uint8))
    for name in ("good.jpg", "empty.jpg", "boxes.jpg", "refs.jpg"):
        (imgs / name).write_bytes(jpg.tobytes())
    (imgs / "cut.jpg").write_bytes(jpg.tobytes()[: len(jpg) // 2])  # truncated
    (imgs / "small.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((20, 30, 3), np.uint8))[1].tobytes())
    # missing.jpg is not written
    names = ["good.jpg", "empty.jpg", "boxes.jpg", "refs.jpg", "cut.jpg", "small.jpg", "missing.jpg"]
    images = [{"id": k + 1, "file_name": n, "width": 60, "height": 40} for k, n in enumerate(names)]
    anns = [
        (1, 1, 1, [1, 1, 10, 10]),  # fine
        (2, 3, 1, [5, 5, 0, 10]),  # non-positive width
        (3, 3, 2, [50, 30, 20, 5]),  # outside the 60x40 image
        (4, 3, 1, [2, 2, 0.5, 3]),  # tiny: warning
        (5, 4, 9, [1, 1, 5, 5]),  # unknown category
        (6, 99, 1, [1, 1, 5, 5]),  # unknown image
        (7, 5, 2, [1, 1, 5, 5]),  # on the truncated image
        (8, 6, 2, [1, 1, 5, 5]),  # on the image whose real size is 30x20
        (9, 7, 1, [1, 1, 5, 5]),  # on the missing image
    ]
    data = {"images": images, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
            "annotations": [{"id": i, "image_id": im, "category_id": c, "bbox": b, "area": 1.0 * b[2] * b[3]}
                            for i, im, c, b in anns]}
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return path


def config(ann_file: Path, img_prefix: Path) -> CocoDatasetConfig:
    return CocoDatasetConfig(ann_file=str(ann_file), img_prefix=str(img_prefix))


def test_check_finds_every_problem_and_does_not_stop(tmp_path):
    ann = broken_dataset(tmp_path)
    report = check_dataset(config(ann, tmp_path / "imgs"), split="train")
    assert not report.ok and report.num_errors == 7  # the tiny box is a warning
    assert report.problem_counts() == {
        "degenerate_boxes": 2, "boxes_outside_images": 1, "unknown_image_or_category": 2,
        "bad_annotations": 0, "missing_files": 1, "unreadable_images": 1, "size_mismatches": 1,
        "misnamed_images": 0, "bad_segmentations": 0, "dataset_without_boxes": 0,
    }
    assert report.num_images == 7
    # images 3 (bad boxes) and 4 (unknown category) are left out of the counts
    assert report.boxes_per_class == {"a": 2, "b": 2} and report.num_boxes == 4
    assert report.empty_images == 1
    by_kind = {p.kind: p for p in report.problems}
    assert by_kind["truncated_image"].file == str(tmp_path / "imgs" / "cut.jpg")
    assert by_kind["missing_file"].file == str(tmp_path / "imgs" / "missing.jpg")
    assert by_kind["size_mismatch"].message == (
        "image is 30x20 but the annotation says 60x40 (width x height)")
    assert by_kind["box_outside"].ann_id == "annotation 3" and by_kind["box_outside"].file == str(ann)
    assert by_kind["unknown_image"].ann_id == "annotation 6"
    assert by_kind["tiny_box"].severity == "warning"
    listed = write_problem_list(report.problems, tmp_path / "work" / "bad.txt").read_text().splitlines()
    assert len(listed) == 8 and listed[0].startswith("error\tunknown_image\t")


def test_cheap_check_reads_annotations_and_file_headers_only(tmp_path):
    report = check_dataset(config(broken_dataset(tmp_path), tmp_path / "imgs"), cheap=True)
    counts = report.problem_counts()
    assert counts["missing_files"] == 1
    # cut.jpg starts like a JPEG and small.jpg is one: without decoding, both pass
    assert counts["unreadable_images"] == 0 and counts["size_mismatches"] == 0
    assert counts["degenerate_boxes"] == 2


def test_cheap_check_catches_a_file_that_is_not_an_image_of_its_extension(tmp_path):
    """The text file named .jpg that used to pass the pre-training check ("0 problems")."""
    ann = broken_dataset(tmp_path)
    (tmp_path / "imgs" / "good.jpg").write_text("<html>404 Not Found</html>\n")
    ok, png = cv2.imencode(".png", np.zeros((40, 60, 3), np.uint8))
    (tmp_path / "imgs" / "small.jpg").write_bytes(png.tobytes())  # a PNG named .jpg
    (tmp_path / "imgs" / "empty.jpg").write_bytes(b"")
    report = check_dataset(config(ann, tmp_path / "imgs"), cheap=True)
    by_file = {Path(p.file).name: p for p in report.problems if p.file.endswith(".jpg")}
    text = by_file["good.jpg"]
    assert (text.kind, text.severity) == ("unreadable_image", "error")
    assert text.message == ("not a JPEG image: the file starts with the text '<html>404 Not Fo', "
                            "which is no image format")
    assert by_file["empty.jpg"].message == "image file is empty"
    misnamed = by_file["small.jpg"]
    assert (misnamed.kind, misnamed.severity) == ("misnamed_image", "warning")
    assert misnamed.message == "a PNG image named .jpg; it loads (by content)"
    assert report.problem_counts()["unreadable_images"] == 2


def test_unloadable_annotation_file_is_one_problem(tmp_path):
    report = check_dataset(config(tmp_path / "nope.json", tmp_path))
    assert not report.ok and report.num_images == 0
    assert [p.message for p in report.problems] == [f"annotation file {tmp_path / 'nope.json'} does not exist"]


def test_clean_synthetic_dataset_passes(tmp_path):
    synth = make_synthetic_dataset(tmp_path, num_train=6, num_val=0, image_size=96, seed=0)
    report = check_dataset(config(synth.ann_file("train"), synth.img_prefix("train")))
    assert report.ok and report.problems == []
    assert report.num_images == 6 and sum(report.boxes_per_class.values()) == report.num_boxes > 0
    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["ok"] is True and as_json["num_images"] == 6


def test_warnings_alone_are_clean_and_inspect_works_on_a_built_dataset(tmp_path):
    from detcli.data.check import inspect_dataset
    from detcli.data.datasets import CocoDataset

    synth = make_synthetic_dataset(tmp_path, num_train=3, num_val=0, image_size=96, seed=0)
    data = json.loads(synth.ann_file("train").read_text())
    data["annotations"][0]["bbox"][2] = 0.5  # under a pixel: dropped with a warning
    ann = tmp_path / "tiny.json"
    ann.write_text(json.dumps(data))
    report = check_dataset(config(ann, synth.img_prefix("train")))
    assert report.ok and [p.kind for p in report.problems] == ["tiny_box"]
    (synth.img_prefix("train") / "000002.jpg").unlink()
    built = CocoDataset(ann_file=str(ann), img_prefix=str(synth.img_prefix("train")), filter_empty_gt=False)
    report = inspect_dataset(built, cheap=True, split="train")
    assert not report.ok and [p.kind for p in report.problems] == ["tiny_box", "missing_file"]


def test_a_yolo_folder_without_label_files_has_no_boxes(tmp_path):
    from detcli.data.datasets import YOLODatasetConfig

    images = tmp_path / "images"
    images.mkdir()
    ok, jpg = cv2.imencode(".jpg", np.full((40, 60, 3), 128, np.uint8))
    for name in ("a.jpg", "b.jpg"):
        (images / name).write_bytes(jpg.tobytes())
    report = check_dataset(YOLODatasetConfig(img_prefix=str(images), classes=["cat"]), cheap=True)
    assert not report.ok and [p.kind for p in report.problems] == ["no_boxes"]
    assert report.problems[0].message.startswith(
        "the dataset has no GT boxes: none of its 2 images has a box; there is nothing to train "
        "on or to evaluate. Check ann_file (YOLO and VOC: each image's label file)")
    assert report.problem_counts()["dataset_without_boxes"] == 1


def test_boxes_of_unselected_classes_are_named_as_the_reason(tmp_path):
    synth = make_synthetic_dataset(tmp_path, num_train=3, num_val=0, image_size=96, seed=0)
    cfg = CocoDatasetConfig(ann_file=str(synth.ann_file("train")),
                            img_prefix=str(synth.img_prefix("train")), classes=["square"])
    data = json.loads(synth.ann_file("train").read_text())
    squares = sum(a["category_id"] == 1 for a in data["annotations"])
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 1]
    ann = tmp_path / "no_squares.json"
    ann.write_text(json.dumps(data))
    report = check_dataset(cfg.model_copy(update={"ann_file": str(ann)}))
    others = len(data["annotations"])
    assert squares > 0 and others > 0
    (problem,) = report.problems
    assert f"none of its 3 images has a box that is used (dropped: {others} boxes of classes " \
           "not in `classes`)" in problem.message


def test_training_and_det_data_check_count_the_same_images_without_boxes(tmp_path):
    """Training drops images without GT (filter_empty_gt); its log line said "0 without boxes"
    right after "dropped 2 without GT", where `det data check` said 2."""
    from detcli.data.check import inspect_dataset
    from detcli.data.datasets import CocoDataset

    synth = make_synthetic_dataset(tmp_path, num_train=6, num_val=0, image_size=96, seed=0)
    data = json.loads(synth.ann_file("train").read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] not in (2, 5)]
    ann = tmp_path / "two_empty.json"
    ann.write_text(json.dumps(data))
    checked = check_dataset(config(ann, synth.img_prefix("train")))
    trained = inspect_dataset(CocoDataset(ann_file=str(ann), img_prefix=str(synth.img_prefix("train"))),
                              cheap=True, split="train")
    empty_before = sum(1 for im in data["images"]
                       if not any(a["image_id"] == im["id"] for a in data["annotations"]))
    assert empty_before >= 2
    assert checked.empty_images == trained.empty_images == empty_before
    assert (checked.num_used, trained.num_used) == (6, 6 - empty_before)
    assert trained.summary() == (f"6 images ({6 - empty_before} used), {trained.num_boxes} boxes, "
                                 f"{empty_before} without boxes, 0 problems")


def test_plural_counts():
    from detcli.text import plural

    assert [plural(n, "problem") for n in (0, 1, 2)] == ["0 problems", "1 problem", "2 problems"]
    assert plural(1, "box", "boxes") == "1 box" and plural(3, "box", "boxes") == "3 boxes"
