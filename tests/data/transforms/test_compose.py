"""Compose: building steps from configs, dicts and callables; errors; the whole train pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detcli.data.transforms import Compose
from detcli.data.transforms.geometric import ResizeConfig
from detcli.errors import DataError, RegistryError
from tests.data.transforms.images import noise_image, write_png

RETINANET_TRAIN = [
    {"type": "LoadImageFromFile"},
    {"type": "LoadAnnotations", "with_bbox": True},
    {"type": "Resize", "img_scale": [128, 80], "keep_ratio": True},
    {"type": "RandomFlip", "flip_ratio": 0.5},
    {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
     "to_rgb": True},
    {"type": "Pad", "size_divisor": 32},
    {"type": "DefaultFormatBundle"},
    {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]},
]


def dataset_results(path, boxes):
    return {
        "img_info": {"id": 1, "file_name": path.name, "filename": str(path), "height": 60, "width": 90},
        "ann_info": {"bboxes": np.array(boxes, np.float32), "labels": np.array([0, 2]),
                     "bboxes_ignore": np.zeros((0, 4), np.float32)},
        "img_prefix": str(path.parent), "image_id": 1, "bbox_fields": [],
    }


def test_retinanet_train_pipeline_end_to_end(tmp_path):
    path = write_png(tmp_path / "img.png", noise_image(60, 90))
    boxes = [[10, 5, 30, 25], [50, 20, 89, 59]]
    pipeline = Compose(RETINANET_TRAIN)
    assert pipeline.names[2] == "Resize" and len(pipeline) == 8
    for seed in range(4):  # flipped and unflipped
        np.random.seed(seed)
        sample = pipeline(dataset_results(path, boxes))
        metas = sample["img_metas"]
        assert sample["img"].shape == (3, 96, 128)  # 90x60 -> 120x80, padded to 128x96
        assert metas["img_shape"] == (80, 120, 3) and metas["pad_shape"] == (96, 128, 3)
        assert metas["ori_shape"] == (60, 90, 3) and metas["image_id"] == 1
        assert (sample["img"][:, 80:] == 0).all() and (sample["img"][:, :, 120:] == 0).all()
        # Undo the transform log: flip in the resized image, then divide by the scale factor.
        pred = sample["gt_bboxes"].numpy()
        if metas["flip"]:
            pred = pred[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [120, 0, 120, 0]
        np.testing.assert_allclose(pred / metas["scale_factor"], boxes, atol=1.0)
        assert sample["gt_labels"].tolist() == [0, 2]


def test_steps_from_config_models_and_callables():
    seen = []

    def record(results):
        seen.append(results["img"].shape)
        return results

    pipeline = Compose([ResizeConfig(img_scale=(20, 10)), record])
    out = pipeline({"img": np.zeros((20, 40, 3), np.uint8), "bbox_fields": []})
    assert seen == [(10, 20, 3)] and out["scale_factor"].tolist() == [0.5] * 4
    assert pipeline.names == ["Resize", "function"]


def test_a_failing_step_names_itself_and_the_file():
    def broken(results):
        raise ValueError("boom")

    with pytest.raises(DataError, match=r"transform function failed on /x/a\.jpg: ValueError: boom"):
        Compose([broken])({"img_info": {"filename": "/x/a.jpg"}})
    missing = {"img_info": {"filename": "/nowhere/b.jpg", "file_name": "b.jpg"}}
    with pytest.raises(DataError, match=r"LoadImageFromFile failed on /nowhere/b\.jpg.*not found"):
        Compose([{"type": "LoadImageFromFile"}])(missing)


def test_nested_pipeline_errors_are_not_wrapped_twice(tmp_path):
    path = write_png(tmp_path / "img.png", noise_image(20, 20))
    tta = {"type": "MultiScaleFlipAug", "img_scale": [40, 40],
           "transforms": [{"type": "Resize"}, {"type": "Collect", "keys": ["img"]}]}
    with pytest.raises(DataError) as info:
        Compose([{"type": "LoadImageFromFile"}, tta])(dataset_results(path, [[0, 0, 1, 1]] * 2))
    assert str(info.value).count("failed on") == 1 and "transform Collect" in str(info.value)


def test_none_stops_the_pipeline():
    calls = []
    pipeline = Compose([lambda r: None, lambda r: calls.append(r) or r])
    assert pipeline({"img_info": {"filename": "a.jpg"}}) is None and calls == []


def test_bad_specs():
    with pytest.raises(RegistryError, match="Did you mean 'Resize'"):
        Compose([{"type": "resize"}])
    with pytest.raises(DataError, match="no 'type'"):
        Compose([{"img_scale": [1, 2]}])
    with pytest.raises(TypeError):
        Compose([42])


def test_contract_dtypes(tmp_path):
    path = write_png(tmp_path / "img.png", noise_image(60, 90))
    sample = Compose(RETINANET_TRAIN)(dataset_results(path, [[10, 5, 30, 25], [50, 20, 89, 59]]))
    assert sample["img"].dtype == torch.float32
    assert sample["gt_bboxes"].dtype == torch.float32 and sample["gt_labels"].dtype == torch.int64
    assert sample["img_metas"]["scale_factor"].dtype == np.float32
