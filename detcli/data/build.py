"""Building datasets from their configs, and the class-count check that runs before training.

K classes. A dataset's class list comes from somewhere a user can look at (a COCO file's
categories, the ``classes`` setting, VOC's 20 names); the model's comes from
``model.bbox_head.num_classes``. They must agree before a single step runs, or every label
past the head's size is silently wrong.
"""

from __future__ import annotations

from typing import Any

import detcli.data.datasets  # noqa: F401  (registers the dataset types)
from detcli.config.schema import Schema
from detcli.data.datasets.base import DetDataset, OnBad
from detcli.errors import ConfigError, ConfigIssue
from detcli.registry import DATASETS


def build_dataset(cfg: Schema, *, on_bad: OnBad = "stop", **derived: Any) -> DetDataset:
    """The dataset ``cfg`` describes (any registered ``type``); ``on_bad`` is
    ``data.on_bad_image``: "stop" raises on the first bad annotation, "skip" drops its image."""
    return DATASETS.build(cfg, on_bad=on_bad, **derived)


def check_num_classes(
    dataset: DetDataset, num_classes: int, where: str = "model.bbox_head.num_classes"
) -> None:
    """ConfigError unless ``dataset`` has ``num_classes`` classes; ``where`` names the setting."""
    if dataset.num_classes == num_classes:
        return
    names = ", ".join(dataset.CLASSES[:10]) + (", ..." if dataset.num_classes > 10 else "")
    message = (f"is {num_classes}, but the dataset {dataset.source} has "
               f"{dataset.num_classes} classes (from {dataset.classes_source}: {names})")
    raise ConfigError(
        "the model and the dataset disagree on the number of classes",
        issues=[ConfigIssue(path=where, message=message, value=num_classes,
                            hint=f"set {where} = {dataset.num_classes}, or list the classes "
                                 "you want in the dataset's `classes`")],
    )
