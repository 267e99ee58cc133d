"""The ``data`` section of a config (MMDetection 2.x names).

``samples_per_gpu`` images per batch and ``workers_per_gpu`` loader processes per GPU;
``train``/``val``/``test`` are dataset configs keyed on ``type`` (any registered dataset,
``false`` for none). ``on_bad_image`` chooses between stopping at the first bad image or
annotation (the default) and skipping such images with a count and a list.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

import detcli.data.datasets  # noqa: F401  (registers the dataset types the fields accept)
import detcli.data.transforms  # noqa: F401  (registers the transform types pipelines accept)
from detcli.config.schema import Maybe, Schema
from detcli.errors import ConfigError
from detcli.registry import DatasetConfig


class DataConfig(Schema):
    samples_per_gpu: int = Field(2, ge=1)
    workers_per_gpu: int = Field(2, ge=0)
    train: Maybe[DatasetConfig] = None
    val: Maybe[DatasetConfig] = None
    test: Maybe[DatasetConfig] = None
    persistent_workers: bool = False  # keep loader processes between epochs (needs workers)
    group_by_aspect_ratio: bool = False  # batch landscape and portrait images apart
    on_bad_image: Literal["stop", "skip"] = "stop"

    @model_validator(mode="after")
    def _workers_for_persistence(self) -> DataConfig:
        if self.persistent_workers and self.workers_per_gpu == 0:
            raise ValueError("persistent_workers = true needs workers_per_gpu >= 1 "
                             "(there are no worker processes to keep)")
        return self

    def split(self, name: str) -> Schema | None:
        """The dataset config of split ``name`` ("train", "val" or "test")."""
        if name not in ("train", "val", "test"):
            raise ConfigError(f"split must be 'train', 'val' or 'test', not {name!r}")
        return getattr(self, name)
