"""The input contract read from test pipelines: normalisation, padding and the static size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcli.config.loader import load_config
from detcli.errors import ConfigError
from detcli.export.contract import InputContract
from detcli.inference.preprocess import inference_pipeline

ROOT = Path(__file__).resolve().parents[2]

NORM = {"type": "Normalize", "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0], "to_rgb": False}


def msfa(img_scale, *steps) -> list[dict]:
    return [{"type": "LoadImageFromFile"},
            {"type": "MultiScaleFlipAug", "img_scale": img_scale, "transforms": list(steps)}]


def test_tiny_preset_contract():
    contract = InputContract.from_pipeline(
        inference_pipeline(load_config(ROOT / "presets" / "retinanet_tiny_synth.toml").cfg))
    assert contract.mean == (123.675, 116.28, 103.53) and contract.std == (58.395, 57.12, 57.375)
    assert contract.to_rgb and contract.keep_ratio
    assert contract.img_scale == (256, 256) and contract.size_divisor == 32
    assert contract.static_size() == (256, 256)
    assert json.loads(contract.metadata()["det.input.size_divisor"]) == 32


def test_keep_ratio_static_size_is_a_square_of_the_long_edge():
    # 1333 x 800 (w x h): a landscape image needs 1333 wide, a portrait one 1333 high
    contract = InputContract.from_pipeline(
        msfa([1333, 800], {"type": "Resize", "keep_ratio": True}, NORM,
             {"type": "Pad", "size_divisor": 32}))
    assert contract.static_size() == (1344, 1344)  # 1333 rounded up to a multiple of 32
    assert contract.mean == (1.0, 2.0, 3.0) and not contract.to_rgb


def test_fixed_resize_static_size_is_h_by_w():
    contract = InputContract.from_pipeline(
        msfa([1333, 800], {"type": "Resize", "keep_ratio": False}, NORM,
             {"type": "Pad", "size_divisor": 32}))
    assert contract.static_size() == (800, 1344)


def test_pad_size_wins_and_no_scale_is_an_error():
    padded = InputContract.from_pipeline(
        [{"type": "LoadImageFromFile"}, {"type": "Resize", "img_scale": [640, 480]},
         {"type": "Pad", "size": [480, 640], "pad_val": {"img": 0}}])
    assert padded.static_size() == (480, 640)
    with pytest.raises(ConfigError, match="cannot tell the input size"):
        InputContract.from_pipeline([{"type": "LoadImageFromFile"}, NORM]).static_size()


def test_describe_names_order_mean_resize_and_padding():
    lines = InputContract.from_pipeline(
        msfa([256, 256], {"type": "Resize", "keep_ratio": True}, {**NORM, "to_rgb": True},
             {"type": "Pad", "size_divisor": 32})).describe()
    assert lines == [
        "layout NCHW float32; BGR -> RGB, then (pixel - mean) / std, mean [1.0, 2.0, 3.0], "
        "std [4.0, 5.0, 6.0]",
        "resize: fit inside (keep ratio) 256 x 256 (w x h)",
        "pad: bottom/right to a multiple of 32 with 0 (after normalisation)",
    ]
