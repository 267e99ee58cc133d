"""Masks in the outputs of `det test` and `det predict`, on a test-file detector that predicts
known masks (tests/cli/mask_test_detector.py: the box (8, 8, 40, 40), class 0, score 0.9, its
mask exactly the box's pixels; a second one at score 0.2).

`det test` scores "bbox" and "segm" side by side, writes the RLE ``segmentation`` of every
result with ``--out`` and fills the masks in the ``--show-dir`` pictures; `det predict` writes
the RLE into predictions.json and fills the kept masks in its pictures. A filled pixel is
``round(0.5 * pixel + 0.5 * class colour)``; a pixel outside every drawing is untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.structures.mask_rle import MaskRLE
from detcli.viz.draw import PALETTE, TITLE_HEIGHT
from tests.cli.mask_test_detector import FixedMaskTestDetector

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ROOT / "presets"
CLASSES = ["square", "circle", "triangle"]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_outputs")
    synth = make_synthetic_dataset(root / "synth", num_train=0, num_val=2, image_size=96, seed=3)
    splits = "".join(
        f'[data.{split}]\nann_file = "{synth.ann_file("val")}"\n'
        f'img_prefix = "{synth.img_prefix("val")}/"\n' for split in ("train", "val", "test"))
    config = root / "mask.toml"
    config.write_text(
        "extends = [" + ", ".join(f'"{PRESETS / "_base" / p}"' for p in (
            "datasets/synth_detection.toml", "schedules/schedule_1x.toml",
            "default_runtime.toml")) + "]\n"
        '[model]\ntype = "FixedMaskTestDetector"\nnum_classes = 3\n'
        "[data]\nsamples_per_gpu = 2\nworkers_per_gpu = 0\n" + splits +
        '[evaluation]\nmetric = ["bbox", "segm"]\n')
    checkpoint = save_checkpoint(root / "fixed.pth", FixedMaskTestDetector(),
                                 meta={"classes": CLASSES}, rng=False)
    return config, checkpoint, synth


def box_pixels(shape: tuple[int, ...], x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    """(H, W) bool of an image of ``shape``: the pixels x1 <= x < x2, y1 <= y < y2."""
    mask = np.zeros(shape[:2], dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def filled(pixel: np.ndarray, label: int) -> np.ndarray:
    return np.floor(pixel * 0.5 + np.array(PALETTE[label]) * 0.5 + 0.5).astype(np.uint8)


def test_det_test_scores_segm_writes_rle_and_draws_the_masks(setup, tmp_path):
    config, checkpoint, synth = setup
    images = Path(synth.img_prefix("val"))
    out, show = tmp_path / "results.json", tmp_path / "show"
    result = run("test", config, checkpoint, "--json", "--device", "cpu", "--out", out,
                 "--show-dir", show)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    metrics = report["metrics"]
    assert 0 <= metrics["segm_mAP"] <= 1 and 0 <= metrics["bbox_mAP"] <= 1
    assert {"AP", "segm_AP"} <= set(metrics["per_class"][0])

    results = json.loads(out.read_text())
    assert len(results) == 4  # two detections on each of the two images
    sizes = {image["id"]: (image["height"], image["width"])
             for image in json.loads(synth.ann_file("val").read_text())["images"]}
    for r in results:
        rle = MaskRLE.from_coco(r["segmentation"])
        box = (8, 8, 40, 40) if r["score"] > 0.5 else (50, 50, 60, 60)
        np.testing.assert_array_equal(rle.decode(), box_pixels(sizes[r["image_id"]], *box))

    result = CliRunner().invoke(app, ["test", str(config), str(checkpoint), "--device", "cpu"],
                                env={"COLUMNS": "250"})  # the tables, wide enough to read
    assert result.exit_code == 0, result.output
    assert "COCO bbox metrics and COCO segm metrics" in result.stdout
    assert "mask AP @[IoU 0.50:0.95]" in result.stdout and "segm_AP" in result.stdout

    picture = sorted(show.rglob("*.png"))[0]
    panel = cv2.imread(str(picture))
    original = cv2.imread(str(images / picture.with_suffix(".jpg").name))
    factor = 4  # 96 px enlarged to at least 320
    y, x = 24, 24  # inside the mask, away from the box's outline and caption
    inside = panel[TITLE_HEIGHT + y * factor + 1, x * factor + 1]
    np.testing.assert_array_equal(inside, filled(original[y, x].astype(np.float64), 0))
    # the low-score detection (0.2 < --show-score-thr) is not drawn: its pixels are the image's
    y, x = 55, 55
    np.testing.assert_array_equal(panel[TITLE_HEIGHT + y * factor + 1, x * factor + 1],
                                  original[y, x])


def test_det_predict_writes_rle_masks_and_fills_them(setup, tmp_path):
    config, checkpoint, synth = setup
    images = Path(synth.img_prefix("val"))
    out = tmp_path / "out"
    result = run("predict", config, checkpoint, images, "--out", out, "--device", "cpu")
    assert result.exit_code == 0, result.output
    records = json.loads((out / "predictions.json").read_text())
    assert len(records) == 2  # the 0.2 detection is under the default --score-thr 0.3
    for record in records:
        assert set(record) == {"file_name", "bbox", "score", "category_id", "category_name",
                               "segmentation"}
        assert record["bbox"] == [8.0, 8.0, 32.0, 32.0]
        mask = MaskRLE.from_coco(record["segmentation"]).decode()
        shape = cv2.imread(str(images / record["file_name"])).shape
        np.testing.assert_array_equal(mask, box_pixels(shape, 8, 8, 40, 40))
    name = records[0]["file_name"]
    drawn, original = cv2.imread(str(out / name)), cv2.imread(str(images / name))
    # the JPEG the picture is saved as moves pixels by a few levels: compare with tolerance
    y, x = 34, 30  # inside the mask, under the caption (written inside the box at its top)
    expected = filled(original[y, x].astype(np.float64), 0).astype(int)
    assert np.abs(drawn[y, x].astype(int) - expected).max() <= 6
    assert np.abs(drawn[y, x].astype(int) - original[y, x].astype(int)).max() > 20

    result = run("predict", config, checkpoint, images, "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)["predictions"]
    assert [r["segmentation"] for r in printed] == [r["segmentation"] for r in records]


def test_the_detector_api_pastes_the_kept_masks_at_the_configs_threshold(setup):
    from detcli.inference import Detector

    config, checkpoint, synth = setup
    image = sorted(Path(synth.img_prefix("val")).glob("*.jpg"))[0]
    shape = cv2.imread(str(image)).shape
    dets = Detector.from_checkpoint(config, checkpoint)(str(image))
    assert len(dets) == 1 and dets.masks.shape == (1, *shape[:2])  # the 0.2 one is dropped
    np.testing.assert_array_equal(dets.masks[0].numpy(), box_pixels(shape, 8, 8, 40, 40))
    every = Detector.from_checkpoint(config, checkpoint, score_thr=None)(str(image))
    assert every.masks.shape[0] == 2
    np.testing.assert_array_equal(every.masks[1].numpy(), box_pixels(shape, 50, 50, 60, 60))

    from detcli.config.loader import load_config

    strict = load_config(config, ["model.test_cfg.mask_thr_binary=0.8"])  # above the 0.75
    assert not Detector.from_checkpoint(strict, checkpoint)(str(image)).masks.any()


@pytest.mark.parametrize("preset", ["mask_rcnn_tiny_synth", "cascade_mask_rcnn_tiny_synth"])
def test_a_mask_rcnn_gives_the_same_masks_to_the_tester_and_to_the_detector_api(tmp_path,
                                                                                preset):
    # An untrained tiny Mask R-CNN or Cascade Mask R-CNN (score_thr 0: it keeps its 20 best) on
    # one synthetic image: det test's path (model.predict pastes, the tester keeps RLE) and
    # det predict's (the Detector pastes the kept detections of predict_batch) give the same
    # masks.
    import torch

    from detcli.config.loader import load_config
    from detcli.data.build import build_eval_dataset
    from detcli.engine.tester import build_test_loader, run_inference
    from detcli.inference import Detector
    from detcli.models.build import build_detector
    from detcli.structures.mask_rle import decode_masks

    synth = make_synthetic_dataset(tmp_path / "synth", num_train=0, num_val=1, image_size=96,
                                   seed=4)
    config = tmp_path / "mask_rcnn.toml"
    config.write_text(
        f'extends = ["{PRESETS / (preset + ".toml")}"]\n[data]\nworkers_per_gpu = 0\n'
        + "".join(f'[data.{s}]\nann_file = "{synth.ann_file("val")}"\n'
                  f'img_prefix = "{synth.img_prefix("val")}/"\n' for s in ("train", "val", "test"))
        + "[model.test_cfg.rcnn]\nscore_thr = 0.0\nmax_per_img = 20\n")
    cfg = load_config(config, ["data.test.pipeline.1.img_scale=[128, 128]"]).cfg  # faster
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    checkpoint = save_checkpoint(tmp_path / "m.pth", model, meta={"classes": CLASSES}, rng=False)
    dataset = build_eval_dataset(cfg.data.test.model_copy(update={"test_mode": True}))
    tested = run_inference(model, build_test_loader(dataset), "cpu")[0]
    info = dataset.img_infos[0]
    predicted = Detector.from_checkpoint(cfg, checkpoint, score_thr=None)(info["filename"])
    assert len(tested) == len(predicted) > 0
    torch.testing.assert_close(tested.boxes, predicted.boxes)
    np.testing.assert_array_equal(
        decode_masks(tested.mask_rles, info["height"], info["width"]), predicted.masks.numpy())
