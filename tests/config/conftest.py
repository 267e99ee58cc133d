"""A small schema of its own, so config-language tests do not depend on the detector components."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from detcli.config.schema import Maybe, Schema
from detcli.registry import Registry

WIDGETS = Registry("widget", "test-only components")


class GearConfig(Schema):
    type: Literal["Gear"] = "Gear"
    teeth: int = Field(12, ge=3)
    pos_iou_thr: float = 0.5


class SpringConfig(Schema):
    type: Literal["Spring"] = "Spring"
    stiffness: float = 1.0


WIDGETS.add_config(GearConfig)
WIDGETS.add_config(SpringConfig)


class MachineConfig(Schema):
    name: str = "m"
    widget: Annotated[Schema, WIDGETS]
    steps: list[int] = Field(default_factory=lambda: [8, 11])
    parts: list[Annotated[Schema, WIDGETS]] = Field(default_factory=list)
    limit: Maybe[float] = None


@pytest.fixture
def write(tmp_path: Path):
    """write("a.toml", text) -> path, with the text dedented."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write
