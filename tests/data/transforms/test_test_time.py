"""MultiScaleFlipAug: one sample per (scale, flip) view, each with its own transform log."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from detcli.data.collate import collate_views
from detcli.data.transforms import MultiScaleFlipAug
from detcli.data.transforms.test_time import MultiScaleFlipAugConfig
from detcli.registry import TRANSFORMS, ensure_current

INNER = [
    {"type": "Resize", "keep_ratio": True},
    {"type": "RandomFlip"},
    {"type": "Normalize", "mean": [0, 0, 0], "std": [1, 1, 1], "to_rgb": False},
    {"type": "Pad", "size_divisor": 32},
    {"type": "ImageToTensor", "keys": ["img"]},
    {"type": "Collect", "keys": ["img"]},
]


def loaded(h=20, w=40, image_id=5):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 4] = 200  # a bright band on the left
    return {"img": img, "img_shape": img.shape, "ori_shape": img.shape, "filename": "f.jpg",
            "ori_filename": "f.jpg", "image_id": image_id, "bbox_fields": []}


def test_views_in_scale_major_order():
    tta = MultiScaleFlipAug(transforms=INNER, img_scale=[(80, 40), (40, 20)], flip=True,
                            flip_direction=["horizontal", "vertical"])
    assert tta.num_views == 6
    views = tta(loaded())["views"]
    flips = [(v["img_metas"]["flip"], v["img_metas"]["flip_direction"]) for v in views]
    assert flips == [(False, None), (True, "horizontal"), (True, "vertical")] * 2
    assert [v["img_metas"]["scale_factor"][0] for v in views] == [2.0] * 3 + [1.0] * 3
    assert [tuple(v["img"].shape) for v in views] == [(3, 64, 96)] * 3 + [(3, 32, 64)] * 3
    # The horizontal view has the band on the right of the resized (80 wide) image.
    assert views[0]["img"][0, 0, 0] == 200 and views[1]["img"][0, 0, 79] == 200
    assert views[1]["img"][0, 0, 0] == 0


def test_scale_factor_mode_and_collate_views():
    tta = MultiScaleFlipAug(transforms=INNER, scale_factor=[0.5, 1.0])
    samples = [tta(loaded(20, 40, 1)), tta(loaded(40, 20, 2))]
    batches = collate_views(samples)
    assert len(batches) == 2
    half, full = batches
    assert half.img_shape_list() == [(10, 20), (20, 10)] and half.tensor.shape == (2, 3, 32, 32)
    assert full.img_shape_list() == [(20, 40), (40, 20)] and full.tensor.shape == (2, 3, 64, 64)
    assert [m["image_id"] for m in half.metas] == [1, 2]
    assert half.scale_factors[:, 0].tolist() == [0.5, 0.5]


def test_config_validation_and_build():
    ensure_current()
    cfg = TRANSFORMS.config("MultiScaleFlipAug").model_validate(
        {"type": "MultiScaleFlipAug", "img_scale": [1333, 800], "flip": False, "transforms": INNER})
    assert cfg.img_scale == (1333, 800) and len(cfg.transforms) == 6
    assert isinstance(TRANSFORMS.build(cfg), MultiScaleFlipAug)
    with pytest.raises(ValidationError, match="exactly one of img_scale and scale_factor"):
        MultiScaleFlipAugConfig(transforms=[], img_scale=(10, 10), scale_factor=0.5)
    with pytest.raises(ValidationError, match="exactly one"):
        MultiScaleFlipAugConfig(transforms=[])
