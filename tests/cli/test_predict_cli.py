"""`det predict` through typer's CliRunner on a folder of synthetic images: drawings and
predictions.json, the same records from PyTorch and --onnx, globs, and the clear failures:
an unreadable image (reported, the rest go on, exit 1), an empty folder, no glob match, the
missing export extra."""

from __future__ import annotations

import json
import shutil
import sys
from collections import defaultdict

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.engine.checkpoint import read_checkpoint
from detcli.engine.work_dir import resolved_config_text
from detcli.export import ExportOptions, export_onnx
from tests.export.tiny_export import CLASSES, detecting_model, make_tiny_export


def run(*args: object):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tiny = make_tiny_export(tmp_path_factory.mktemp("predict_cli"), num_images=4)
    sub = tiny.root / "inputs" / "sub"
    sub.mkdir(parents=True)
    images = sorted(tiny.images.glob("*.jpg"))
    for image in images[:3]:
        shutil.copy(image, tiny.root / "inputs" / image.name)
    shutil.copy(images[3], sub / images[3].name)
    return tiny


@pytest.fixture(scope="module")
def onnx_file(tiny):
    options = ExportOptions(dynamic_batch=True, dynamic_size=True, image_sizes=True)
    return export_onnx(detecting_model(tiny.config), tiny.root / "tiny.onnx",
                       input_size=(256, 256), options=options).path


def by_image(records: list[dict]) -> dict[str, list[dict]]:
    grouped = defaultdict(list)
    for record in records:
        grouped[record["file_name"]].append(record)
    return grouped


def test_folder_gives_drawings_and_coco_style_json(tiny, tmp_path):
    out = tmp_path / "out"
    result = run(tiny.config, tiny.checkpoint, tiny.root / "inputs", "--out", out,
                 "--device", "cpu")
    assert result.exit_code == 0, result.output
    names = ["000001.jpg", "000002.jpg", "000003.jpg", "sub/000004.jpg"]
    for name in names:
        drawn, original = cv2.imread(str(out / name)), cv2.imread(str(tiny.root / "inputs" / name))
        assert drawn.shape == original.shape
    records = json.loads((out / "predictions.json").read_text())
    # the fourth image's best score is about 0.16: under --score-thr 0.3, drawn without boxes
    assert sorted(by_image(records)) == names[:3]
    assert set(records[0]) == {"file_name", "bbox", "score", "category_id", "category_name"}
    assert all(r["score"] > 0.3 for r in records)  # the default --score-thr
    assert all(r["category_name"] == CLASSES[r["category_id"]] for r in records)
    x, y, w, h = records[0]["bbox"]
    assert w > 0 and h > 0
    drawn = cv2.imread(str(out / records[0]["file_name"]))
    assert not np.array_equal(drawn, cv2.imread(str(tiny.root / "inputs" /
                                                    records[0]["file_name"])))
    assert "4 of 4 images" in result.stdout and f"{len(records)} detections" in result.stdout


def test_pytorch_and_onnx_give_the_same_predictions(tiny, onnx_file):
    args = (tiny.root / "inputs", "--score-thr", 0.05, "--json")
    # --onnx needs no checkpoint: the file holds the weights
    torch_run, onnx_run = run(tiny.config, tiny.checkpoint, *args), run(tiny.config, *args,
                                                                          "--onnx", onnx_file)
    assert torch_run.exit_code == 0 and onnx_run.exit_code == 0, onnx_run.output
    ref, out = json.loads(torch_run.stdout), json.loads(onnx_run.stdout)
    assert (ref["backend"], out["backend"]) == ("pytorch", "onnxruntime")
    assert ref["num_detections"] == out["num_detections"] > 100
    for name, expected in by_image(ref["predictions"]).items():
        found = by_image(out["predictions"])[name]
        assert [r["category_id"] for r in found] == [r["category_id"] for r in expected]
        boxes = np.array([r["bbox"] for r in found]) - np.array([r["bbox"] for r in expected])
        scores = np.array([r["score"] for r in found]) - np.array([r["score"] for r in expected])
        assert np.abs(boxes).max() <= 0.02 and np.abs(scores).max() <= 1e-4


def test_glob_and_duplicates(tiny):
    pattern = str(tiny.root / "inputs" / "**" / "*.jpg")
    result = run(tiny.config, tiny.checkpoint, pattern, tiny.root / "inputs" / "000001.jpg",
                 "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["num_images"] == 4  # 000001.jpg once


def test_unreadable_image_is_reported_and_the_rest_go_on(tiny, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(tiny.root / "inputs", folder)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    out = tmp_path / "out"
    result = run(tiny.config, tiny.checkpoint, folder, "--out", out)
    assert result.exit_code == 1
    assert "4 of 5 images" in result.stdout
    assert "1 file could not be read" in result.stdout
    assert "broken.jpg" in result.stdout
    assert (out / "000001.jpg").is_file() and (out / "predictions.json").is_file()
    assert not (out / "broken.jpg").exists()


def test_empty_folder_and_no_match_are_clear_errors(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run(tiny.config, tiny.checkpoint, tmp_path / "empty")
    assert result.exit_code == 3
    assert f"folder {tmp_path / 'empty'} has no image or video files" in result.output
    result = run(tiny.config, tiny.checkpoint, str(tmp_path / "*.png"))
    assert result.exit_code == 3
    assert "no image or video file matches" in result.output
    result = run(tiny.config, tiny.checkpoint, tmp_path / "missing.jpg")
    assert result.exit_code == 3
    assert "missing.jpg does not exist" in result.output


def test_onnx_without_the_extra_names_it(tiny, onnx_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    result = run(tiny.config, tiny.root / "inputs", "--onnx", onnx_file)
    assert result.exit_code == 1
    assert "onnxruntime is not installed" in result.output
    assert "pip install 'detcli[export]'" in result.output


def test_a_checkpoint_given_with_onnx_is_not_loaded(tiny, onnx_file):
    result = run(tiny.config, tiny.checkpoint, tiny.root / "inputs" / "000001.jpg",
                 "--onnx", onnx_file, "--json")
    assert result.exit_code == 0, result.output
    assert f"the checkpoint {tiny.checkpoint} is not needed" in result.stderr
    assert json.loads(result.stdout)["num_images"] == 1


def test_without_onnx_a_checkpoint_and_an_input_are_needed(tiny):
    result = run(tiny.config, tiny.root / "inputs")
    assert result.exit_code == 2
    assert "needs a CHECKPOINT and at least one INPUT" in result.output


def test_several_folders_keep_their_names_under_out(tiny, tmp_path):
    first, second = tmp_path / "first", tmp_path / "far" / "away" / "second"
    shutil.copytree(tiny.root / "inputs", first)
    second.mkdir(parents=True)
    shutil.copy(tiny.root / "inputs" / "000001.jpg", second / "000001.jpg")
    out = tmp_path / "out"
    result = run(tiny.config, tiny.checkpoint, first, second, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert written == ["first/000001.jpg", "first/000002.jpg", "first/000003.jpg",
                       "first/sub/000004.jpg", "second/000001.jpg"]
    records = json.loads((out / "predictions.json").read_text())
    assert {r["file_name"] for r in records} >= {"first/000001.jpg", "second/000001.jpg"}


def test_video_gives_an_annotated_video_and_per_frame_records(tiny, tmp_path):
    frames = [cv2.imread(str(p)) for p in sorted(tiny.images.glob("*.jpg"))[:3]]
    h, w = frames[0].shape[:2]
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 4.0, (w, h))
    for frame in frames:
        writer.write(cv2.resize(frame, (w, h)))
    writer.release()
    out = tmp_path / "out"
    result = run(tiny.config, tiny.checkpoint, clip, "--out", out, "--json",
                 "--score-thr", 0.05)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["num_videos"] == 1 and payload["num_images"] == 0
    assert payload["videos"] == [{"file_name": "clip.avi", "frames": 3, "fps": 4.0,
                                  "out": str(out / "clip.avi.mp4")}]
    records = payload["predictions"]
    assert {r["frame"] for r in records} == {0, 1, 2}  # every frame detects something
    assert all(r["file_name"] == "clip.avi" for r in records)
    assert json.loads((out / "predictions.json").read_text()) == records
    annotated = cv2.VideoCapture(str(out / "clip.avi.mp4"))
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (int(annotated.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(annotated.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (w, h)
    ok, first = annotated.read()
    assert ok and np.abs(first.astype(int) - frames[0]).max() > 100  # boxes were drawn


def test_a_broken_video_is_reported_and_the_images_go_on(tiny, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(tiny.root / "inputs", folder)
    (folder / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    result = run(tiny.config, tiny.checkpoint, folder, "--out", out)
    assert result.exit_code == 1
    assert "4 of 4 images, 0 of 1 video" in result.stdout
    assert "1 file could not be read" in result.stdout and "broken.mp4" in result.stdout
    assert not list(out.rglob("*.mp4"))  # no half-written video


def test_an_out_folder_under_a_regular_file_is_a_storage_error(tiny, tmp_path):
    """Drawings and predictions.json are writes: an --out that cannot be made exits 5 with one
    message naming the file in the way, no traceback."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("not a folder")
    result = run(tiny.config, tiny.checkpoint, tiny.root / "inputs", "--out", blocker / "out",
                 "--device", "cpu")
    assert result.exit_code == 5, result.output
    assert f"{blocker} is a file, not a folder" in result.output
    assert "Traceback" not in result.output


def test_a_checkpoint_that_keeps_its_config_needs_no_config_file(tiny, tmp_path):
    """CHECKPOINT INPUT...: the config det train keeps in meta.config; the same records as
    CONFIG CHECKPOINT INPUT... (which still works)."""
    ckpt = read_checkpoint(tiny.checkpoint)
    ckpt["meta"]["config"] = resolved_config_text(load_config(tiny.config))
    torch.save(ckpt, tmp_path / "with_config.pth")
    alone = run(tmp_path / "with_config.pth", tiny.root / "inputs", "--json", "--device", "cpu")
    assert alone.exit_code == 0, alone.output
    both = run(tiny.config, tiny.checkpoint, tiny.root / "inputs", "--json", "--device", "cpu")
    assert both.exit_code == 0, both.output
    records = json.loads(alone.stdout)["predictions"]
    assert records and records == json.loads(both.stdout)["predictions"]


def test_a_checkpoint_without_a_config_asks_for_one(tiny):
    result = run(tiny.checkpoint, tiny.root / "inputs", "--device", "cpu")
    assert result.exit_code == 4, result.output
    assert "keeps no config in its meta" in result.output
    assert "Traceback" not in result.output
