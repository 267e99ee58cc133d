"""Drawing boxes: colours where the box edges are, captions, panel layout, file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from detcli.structures.detections import Detections
from detcli.viz.draw import (
    TITLE_HEIGHT,
    box_caption,
    class_colour,
    draw_boxes,
    panel_name,
    prediction_vs_gt,
    save_image,
    side_by_side,
    upscale,
)

NAMES = ("square", "circle")


def grey(h: int = 60, w: int = 80) -> np.ndarray:
    return np.full((h, w, 3), 100, dtype=np.uint8)


def test_box_edges_take_the_class_colour_and_the_input_is_untouched():
    image = grey()
    out = draw_boxes(image, [[20, 30, 60, 50]], [1], NAMES, thickness=1)
    assert (image == 100).all()
    assert tuple(out[40, 20]) == class_colour(1)  # left edge, mid-height
    assert tuple(out[50, 40]) == class_colour(1)  # bottom edge
    assert tuple(out[40, 40]) == (100, 100, 100)  # inside the box: image shows through
    assert (out[:30] != 100).any()  # the caption sits above the box


def test_captions():
    assert box_caption(0, NAMES, 0.876) == "square 0.88"
    assert box_caption(1, NAMES, None) == "circle"
    assert box_caption(5, NAMES, 0.5) == "class 5 0.50"


def test_side_by_side_layout():
    panel = side_by_side(grey(60, 80), grey(40, 30), titles=("a", "b"), gap=6)
    assert panel.shape == (TITLE_HEIGHT + 60, 80 + 6 + 30, 3)
    assert (panel[:, 80:86] == 255).all()  # the gap


def test_small_images_are_enlarged_by_an_integer_factor():
    big, factor = upscale(grey(60, 80), 320)
    assert factor == 4 and big.shape == (240, 320, 3)
    same, factor = upscale(grey(400, 300), 320)
    assert factor == 1 and same.shape == (400, 300, 3)


def test_prediction_panel_hides_low_scores_and_scales_boxes():
    dets = Detections(torch.tensor([[10.0, 10, 30, 30], [40, 10, 60, 30]]), torch.tensor([0.9, 0.1]),
                      torch.tensor([0, 1]))
    gt = {"bboxes": np.array([[40, 10, 60, 30]], np.float32), "labels": np.array([1])}
    panel = prediction_vs_gt(grey(), dets, gt, NAMES, score_thr=0.3, min_side=160)  # factor 2
    pred = panel[TITLE_HEIGHT:]  # (120, 160, 3) left panel first
    assert tuple(pred[40, 20]) == class_colour(0)  # kept box, left edge at x = 10 * 2
    assert tuple(pred[40, 80]) == (100, 100, 100)  # the 0.1 box (x1 = 40 * 2) is not drawn
    truth = pred[:, 160 + 6:]
    assert tuple(truth[40, 80]) == class_colour(1)  # the GT box is


def test_panel_names_stay_inside_the_output_folder(tmp_path):
    assert panel_name({"file_name": "sub/x.jpg", "id": 1}) == Path("sub/x.png")
    assert panel_name({"file_name": "/abs/y.jpg", "id": 2}) == Path("y.png")
    assert panel_name({"file_name": "../z.jpg", "id": 3}) == Path("z.png")
    written = save_image(tmp_path / "a" / "b.png", grey())
    assert written.is_file()
