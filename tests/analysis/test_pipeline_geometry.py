"""PipelineGeometry: the Resize/Pad arithmetic on image sizes gives what the real transforms
give on real (blank) images, and the settings are read from configs as documented."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.analysis.pipeline_geometry import PipelineGeometry
from detcli.data.transforms.compose import Compose

RESIZE_PAD = [{"type": "Resize", "img_scale": [256, 192], "keep_ratio": True},
              {"type": "Pad", "size_divisor": 32}]
TTA = [{"type": "LoadImageFromFile"},
       {"type": "MultiScaleFlipAug", "img_scale": [96, 64], "flip": False, "transforms": [
           {"type": "Resize", "keep_ratio": True}, {"type": "RandomFlip"},
           {"type": "Pad", "size_divisor": 32}, {"type": "ImageToTensor", "keys": ["img"]},
           {"type": "Collect", "keys": ["img"]}]}]
BOXES = np.array([[0., 0., 10., 20.], [30., 5., 47., 31.]], dtype=np.float32)  # inside 48 x 32


def run_real(pipeline: list, h: int, w: int, boxes: np.ndarray) -> dict:
    results = {"img": np.zeros((h, w, 3), np.uint8), "gt_bboxes": boxes.copy(),
               "bbox_fields": ["gt_bboxes"]}
    return Compose(pipeline)(results)


@pytest.mark.parametrize("pipeline", [
    RESIZE_PAD,
    [{**RESIZE_PAD[0], "keep_ratio": False}, RESIZE_PAD[1]],
    [{**RESIZE_PAD[0], "img_scale": [1333, 800]}, {"type": "Pad", "pad_to_square": True}],
    [{"type": "Resize", "img_scale": [77, 77]}, {"type": "Pad", "size": [96, 128]}],
])
@pytest.mark.parametrize("hw", [(32, 48), (375, 500), (481, 333)])
def test_arithmetic_matches_the_transforms(pipeline, hw):
    h, w = hw
    boxes = BOXES * np.array([w / 48, h / 32] * 2, dtype=np.float32)  # (2, 4) inside the image
    real = run_real(pipeline, h, w, boxes)
    geometry = PipelineGeometry.from_pipeline(pipeline, "test")
    img_shape, pad_shape, factors = geometry.shapes(np.array([h]), np.array([w]))
    assert tuple(img_shape[0]) == real["img_shape"][:2]
    assert tuple(pad_shape[0]) == real["pad_shape"][:2]
    assert factors[0].tolist() == real["scale_factor"][:2].tolist()
    mapped = geometry.boxes(boxes, np.zeros(2, np.int64), factors, img_shape)
    np.testing.assert_array_equal(mapped, real["gt_bboxes"])


def test_multiscale_flip_aug_scale_is_read_and_boxes_scale():
    geometry = PipelineGeometry.from_pipeline(TTA, "data.val.pipeline")
    assert (geometry.img_scale, geometry.keep_ratio, geometry.pad_size_divisor) == ((96, 64), True, 32)
    assert geometry.notes == []
    img_shape, pad_shape, factors = geometry.shapes(np.array([32, 40]), np.array([48, 40]))
    assert img_shape.tolist() == [[64, 96], [64, 64]]  # 48x32 -> x2; 40x40 -> short side 64
    assert pad_shape.tolist() == [[64, 96], [64, 64]]
    boxes = geometry.boxes(BOXES, np.array([0, 0]), factors, img_shape)
    assert boxes.tolist() == [[0., 0., 20., 40.], [60., 10., 94., 62.]]


def test_unmodelled_steps_are_noted_not_silently_dropped():
    geometry = PipelineGeometry.from_pipeline(
        [{"type": "Resize", "img_scale": [[100, 100], [200, 200]], "multiscale_mode": "value"},
         {"type": "RandomCrop", "crop_size": [50, 50]}], "data.train.pipeline")
    assert geometry.img_scale == (100, 100)
    assert geometry.notes == ["Resize draws a random scale; analysed at img_scale (100, 100)",
                              "RandomCrop in data.train.pipeline is not applied to the boxes"]
    none = PipelineGeometry.from_pipeline([], "p")
    assert none.notes == ["p has no Resize: boxes keep their original size"]
