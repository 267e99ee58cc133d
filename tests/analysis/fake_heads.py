"""A test-only anchor-free head config ("PointHead": no anchor_generator), registered for one
test and removed afterwards, so the real registry is left as it was."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from detcli import registry as reg
from detcli.config.schema import Schema

ROOT = Path(__file__).resolve().parents[2]


class PointHeadConfig(Schema):
    type: Literal["PointHead"] = "PointHead"
    num_classes: int = Field(ge=1)
    in_channels: int | None = None


@pytest.fixture
def point_head():
    """Register ``PointHead`` (config only) in HEADS for the duration of a test."""
    reg.HEADS.add_config(PointHeadConfig)
    try:
        yield "PointHead"
    finally:
        del reg.HEADS._configs["PointHead"]
        reg.generation += 1  # config models rebuild without it on next use


def point_head_config(folder: Path) -> Path:
    """A config file whose model has the PointHead (needs the ``point_head`` fixture)."""
    base = ROOT / "presets" / "_base"
    path = folder / "point_head.toml"
    path.write_text(
        f'extends = ["{base}/datasets/synth_detection.toml", "{base}/schedules/schedule_1x.toml", '
        f'"{base}/default_runtime.toml"]\n'
        '[model]\ntype = "RetinaNet"\n'
        'backbone = { type = "ResNet", depth = 18, init_cfg = false }\n'
        'neck = { type = "FPN", out_channels = 64, start_level = 1, add_extra_convs = "on_input", '
        'num_outs = 5 }\n'
        'bbox_head = { type = "PointHead", num_classes = 3 }\n')
    return path
