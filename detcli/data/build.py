"""Building datasets from their configs, and the class-count check that runs before training.

K classes. A dataset's class list comes from somewhere a user can look at (a COCO file's
categories, the ``classes`` setting, VOC's 20 names); the model's comes from
``model.bbox_head.num_classes``. They must agree before a single step runs, or every label
past the head's size is silently wrong.

An evaluation's dataset (:func:`build_eval_dataset`: ``data.val`` during training, the tested
split of ``det test``) keeps every image. With ``data.on_bad_image = "skip"`` its image files
are decoded once when it is built and those that cannot be loaded (missing, unreadable,
truncated, not an image) are left out of it, GT and all, and logged: unlike training, which
replaces a bad image by another as it meets it, an evaluation must know its images before it
runs, and every process of a distributed run must leave out the same ones.
"""

from __future__ import annotations

import logging
from typing import Any

import detcli.data.datasets  # noqa: F401  (registers the dataset types)
from detcli.config.schema import Schema
from detcli.data.check import UNLOADABLE, image_faults
from detcli.data.datasets.base import DetDataset, OnBad
from detcli.text import plural
from detcli.errors import ConfigError, ConfigIssue
from detcli.registry import DATASETS

log = logging.getLogger(__name__)


def build_dataset(cfg: Schema, *, on_bad: OnBad = "stop", **derived: Any) -> DetDataset:
    """The dataset ``cfg`` describes (any registered ``type``); ``on_bad`` is
    ``data.on_bad_image``: "stop" raises on the first bad annotation, "skip" drops its image."""
    return DATASETS.build(cfg, on_bad=on_bad, **derived)


def build_eval_dataset(cfg: Schema, *, on_bad: OnBad = "stop", **derived: Any) -> DetDataset:
    """The dataset ``cfg`` describes, in test mode (every image kept); with ``on_bad="skip"``
    without the images that cannot be loaded (module docstring)."""
    dataset = build_dataset(cfg.model_copy(update={"test_mode": True}), on_bad=on_bad, **derived)
    if on_bad != "skip":
        return dataset
    bad = [(k, p) for k, p in image_faults(dataset) if p.kind in UNLOADABLE]
    if bad:
        dataset.drop_images([k for k, _ in bad], [p for _, p in bad])
        log.warning("%s: left out %s of %d that cannot be loaded (data.on_bad_image = \"skip\"); "
                    "first: %s", dataset.source, plural(len(bad), "image"), len(dataset) + len(bad),
                    bad[0][1])
    return dataset


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
