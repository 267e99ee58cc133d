"""DefaultFormatBundle, ImageToTensor and Collect produce the contract's sample dict."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detcli.data.transforms.formatting import (
    DEFAULT_META_KEYS,
    Collect,
    DefaultFormatBundle,
    ImageToTensor,
)
from detcli.errors import DataError


def loaded_results():
    img = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    return {
        "img": img, "img_shape": img.shape, "ori_shape": img.shape, "filename": "/d/a.jpg",
        "ori_filename": "a.jpg", "image_id": 3,
        "gt_bboxes": np.array([[0, 1, 2, 3]], np.float64), "gt_labels": np.array([4], np.int32),
        "gt_bboxes_ignore": np.zeros((0, 4), np.float32), "bbox_fields": ["gt_bboxes"],
    }


def test_bundle_and_collect_make_the_contract_sample():
    res = DefaultFormatBundle()(loaded_results())
    sample = Collect(keys=["img", "gt_bboxes", "gt_labels", "gt_bboxes_ignore"])(res)
    assert set(sample) == {"img", "gt_bboxes", "gt_labels", "gt_bboxes_ignore", "img_metas"}
    img = sample["img"]
    assert img.dtype == torch.float32 and img.shape == (3, 4, 5) and img.is_contiguous()
    assert img[2, 1, 3].item() == loaded_results()["img"][1, 3, 2]  # (H, W, C) -> (C, H, W)
    assert sample["gt_bboxes"].dtype == torch.float32 and sample["gt_bboxes"].shape == (1, 4)
    assert sample["gt_labels"].dtype == torch.int64 and sample["gt_labels"].tolist() == [4]
    assert sample["gt_bboxes_ignore"].shape == (0, 4)
    metas = sample["img_metas"]
    assert tuple(metas) == DEFAULT_META_KEYS
    assert metas["image_id"] == 3 and metas["filename"] == "/d/a.jpg"
    # Defaults for a pipeline without Resize, Pad, Normalize, RandomFlip:
    assert metas["pad_shape"] == (4, 5, 3) and metas["flip"] is False
    assert metas["flip_direction"] is None
    np.testing.assert_array_equal(metas["scale_factor"], np.ones(4, np.float32))
    np.testing.assert_array_equal(metas["img_norm_cfg"]["std"], [1, 1, 1])


def test_bundle_keeps_recorded_meta():
    res = loaded_results()
    res["scale_factor"] = np.array([2, 2, 2, 2], np.float32)
    res["pad_shape"] = (32, 32, 3)
    res["flip"], res["flip_direction"] = True, "horizontal"
    out = DefaultFormatBundle()(res)
    assert out["pad_shape"] == (32, 32, 3) and out["flip"] is True
    assert out["scale_factor"].tolist() == [2, 2, 2, 2]


def test_image_to_tensor_keeps_dtype():
    img = np.random.default_rng(0).random((4, 5, 3), dtype=np.float32)
    out = ImageToTensor(keys=["img"])({"img": img})
    assert out["img"].dtype == torch.float32 and out["img"].shape == (3, 4, 5)
    assert out["img"][1, 2, 3].item() == img[2, 3, 1]


def test_collect_names_missing_keys():
    res = DefaultFormatBundle()(loaded_results())
    del res["image_id"]
    with pytest.raises(DataError, match=r"no \['image_id'\]") as info:
        Collect(keys=["img"])(res)
    assert "present keys" in str(info.value) and info.value.hint
    only = Collect(keys=["img"], meta_keys=["filename"])(DefaultFormatBundle()(loaded_results()))
    assert set(only) == {"img", "img_metas"} and only["img_metas"] == {"filename": "/d/a.jpg"}
