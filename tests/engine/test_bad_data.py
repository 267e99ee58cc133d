"""Bad data in training and testing: skip applies to every split, problems are found before the
first step, an empty training set says why, and errors from loader workers read like the main
process's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from detcli.config.loader import load_config
from detcli.data.check import check_dataset
from detcli.engine.checkpoint_eval import evaluate_checkpoint
from detcli.engine.trainer import train_detector
from detcli.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def copy_images(synth, split: str, root: Path) -> Path:
    images = root / f"{split}_images"
    shutil.copytree(synth.img_prefix(split), images)
    return images


def gt_of_image(ann_file: Path, file_name: str) -> int:
    data = json.loads(ann_file.read_text())
    (image_id,) = [im["id"] for im in data["images"] if im["file_name"] == file_name]
    return sum(a["image_id"] == image_id for a in data["annotations"])


def test_skip_leaves_an_undecodable_val_image_out_of_the_evaluation(tiny_config, synth, tmp_path):
    """Used to crash the end-of-epoch evaluation inside a loader worker (exit 3)."""
    val = copy_images(synth, "val", tmp_path)
    (val / "000001.jpg").write_text("not an image\n")
    loaded = tiny_config(f'data.val.img_prefix="{val}/"', 'data.on_bad_image="skip"',
                         "runner.max_epochs=1", "data.workers_per_gpu=1")
    work = tmp_path / "work"
    result = train_detector(loaded, work_dir=work, device="cpu")
    assert result.stop_reason == "finished" and 0.0 <= result.metrics["bbox_mAP"] <= 1.0
    all_gt = check_dataset(loaded.cfg.data.val).num_boxes  # counts, the file unread
    assert sum(result.val_gt_per_class) == all_gt - gt_of_image(synth.ann_file("val"), "000001.jpg")
    assert (work / "epoch_1.pth").exists()
    listed = (work / "dataset_problems.txt").read_text()
    assert f"unreadable_image\t{val / '000001.jpg'}" in listed
    # the training log's count of images without boxes is det data check's (2 of 24 here)
    empty = check_dataset(loaded.cfg.data.train).empty_images
    assert empty == 2
    assert "train data: 24 images (22 used), " in (work / "train.log").read_text()
    assert f" boxes, {empty} without boxes, 0 problems" in (work / "train.log").read_text()


def test_stop_finds_an_undecodable_val_image_before_the_first_step(tiny_config, synth, tmp_path):
    """Used to pass the pre-training check ("0 problems") and fail after the first epoch."""
    val = copy_images(synth, "val", tmp_path)
    (val / "000003.jpg").write_text("<html>404</html>\n")
    loaded = tiny_config(f'data.val.img_prefix="{val}/"', "runner.max_epochs=1")
    work = tmp_path / "work"
    with pytest.raises(DataError) as info:
        train_detector(loaded, work_dir=work, device="cpu")
    assert str(info.value) == (
        f"1 problem in the validation data: {val / '000003.jpg'}: image 000003.jpg: not a JPEG "
        "image: the file starts with the text '<html>404</html>', which is no image format")
    assert not list(work.glob("*.pth"))  # nothing trained


@pytest.mark.parametrize("on_bad", ["stop", "skip"])
def test_a_training_set_without_boxes_says_why(tiny_config, synth, tmp_path, on_bad):
    """Used to be torch's `ValueError: num_samples should be a positive integer`."""
    data = json.loads(synth.ann_file("train").read_text())
    data["annotations"] = []
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps(data))
    loaded = tiny_config(f'data.train.ann_file="{empty}"', f'data.on_bad_image="{on_bad}"')
    with pytest.raises(DataError) as info:
        train_detector(loaded, work_dir=tmp_path / "work", device="cpu")
    assert str(info.value).startswith(
        f"the training set {empty}: the dataset has no GT boxes: none of its 24 images has a box; "
        "there is nothing to train on or to evaluate. Check ann_file")
    assert info.value.hint == "`det data check CONFIG --split train` shows what it holds"


def test_a_yolo_training_folder_without_labels_says_why(tmp_path):
    import cv2
    import numpy as np

    from detcli.data.check import check_before_training
    from detcli.data.datasets import YOLODataset

    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(images / name), np.zeros((32, 48, 3), np.uint8))
    dataset = YOLODataset(img_prefix=str(images), classes=["cat"], filter_empty_gt=True)
    assert len(dataset) == 0
    with pytest.raises(DataError, match="none of its 2 images has a box"):
        check_before_training({"train": dataset}, on_bad="skip")


@pytest.fixture(scope="module")
def checkpoint(tiny_config_path, tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = load_config(tiny_config_path, ["runner.max_epochs=1", "data.val=false"])
        result = train_detector(loaded, work_dir=tmp_path_factory.mktemp("bad-data-run"),
                                device="cpu")
    finally:
        torch.set_num_threads(threads)
    return result.latest


def test_det_test_with_skip_evaluates_the_images_that_load(tiny_config, synth, checkpoint, tmp_path):
    val = copy_images(synth, "val", tmp_path)
    (val / "000002.jpg").write_bytes(b"")  # empty
    jpg = (val / "000005.jpg").read_bytes()
    (val / "000005.jpg").write_bytes(jpg[: len(jpg) // 2])  # truncated: its header is fine
    cfg = tiny_config(f'data.val.img_prefix="{val}/"', 'data.on_bad_image="skip"',
                      "data.workers_per_gpu=1").cfg
    found = evaluate_checkpoint(cfg, checkpoint, device="cpu")
    names = [info["file_name"] for info in found.dataset.img_infos]
    assert len(names) == 10 and "000002.jpg" not in names and "000005.jpg" not in names
    assert {p.kind for p in found.dataset.problems} == {"unreadable_image", "truncated_image"}
    assert 0.0 <= found.metrics["plain"]["bbox_mAP"] <= 1.0


def test_det_test_with_stop_reports_a_worker_error_like_a_main_process_one(
        tiny_config, synth, checkpoint, tmp_path):
    val = copy_images(synth, "val", tmp_path)
    jpg = (val / "000005.jpg").read_bytes()
    (val / "000005.jpg").write_bytes(jpg[: len(jpg) // 2])
    messages = []
    for workers in (0, 1):
        cfg = tiny_config(f'data.val.img_prefix="{val}/"', f"data.workers_per_gpu={workers}").cfg
        with pytest.raises(DataError) as info:
            evaluate_checkpoint(cfg, checkpoint, device="cpu")
        messages.append(str(info.value))
    assert messages[0] == messages[1]  # no "Caught DataError in DataLoader worker process 0"
    assert "Traceback" not in messages[1] and str(val / "000005.jpg") in messages[1]
    assert "truncated" in messages[1]
