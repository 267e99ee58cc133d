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


def test_cheap_check_reads_annotations_and_file_existence_only(tmp_path):
    report = check_dataset(config(broken_dataset(tmp_path), tmp_path / "imgs"), cheap=True)
    counts = report.problem_counts()
    assert counts["missing_files"] == 1
    assert counts["unreadable_images"] == 0 and counts["size_mismatches"] == 0  # no decoding
    assert counts["degenerate_boxes"] == 2


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
