"""The packaged presets described: what ``det presets`` lists.

:func:`list_presets` describes each top-level preset (not ``_base/``): family, backbone,
dataset and schedule come from its resolved config, and the summary from its first line, a
``# `` comment (the one convention a preset file follows beyond the config language). Resolving
a config is above every component, so this lives apart from :mod:`detcli.config.presets`,
which the loader itself uses to resolve names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detcli.config.loader import load_config
from detcli.config.presets import SUFFIX, preset_names, presets_dir
from detcli.data.datasets.base import DatasetBaseConfig
from detcli.engine.config import EpochRunnerConfig, StepLrConfig
from detcli.models.introspect import config_num_classes


@dataclass(frozen=True)
class PresetInfo:
    """One preset as ``det presets`` lists it."""

    name: str
    path: Path
    family: str  # the detector type: RetinaNet, FCOS, ATSS, FasterRCNN
    backbone: str  # "ResNet-50", "ResNet-18 (1/4 width)", "ResNeXt-101 64x4d"
    backbone_channels: list[int]  # the channels of each backbone output, what the neck reads
    backbone_weights: list[str]  # the ImageNet checkpoints det knows that fit the backbone
    dataset: str  # "CocoDataset data/coco, 80 classes"
    schedule: str  # "12 epochs, SGD lr 0.01, step at 8, 11"
    summary: str  # the file's first line, a `# ` comment

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "file": str(self.path), "family": self.family,
                "backbone": self.backbone, "backbone_channels": list(self.backbone_channels),
                "backbone_weights": list(self.backbone_weights),
                "dataset": self.dataset, "schedule": self.schedule,
                "summary": self.summary}


def list_presets(root: Path | None = None) -> list[PresetInfo]:
    """Every top-level preset under ``root`` (default: the packaged ones), described from its
    resolved config."""
    root = presets_dir() if root is None else root
    infos = []
    for name in preset_names(root=root):
        path = root.joinpath(*name.split("/")).with_suffix(SUFFIX)
        cfg = load_config(path).cfg
        infos.append(PresetInfo(name=name, path=path, family=cfg.model.type,
                                backbone=cfg.model.backbone.label(),
                                backbone_channels=cfg.model.backbone.out_channels(),
                                backbone_weights=cfg.model.backbone.weights(),
                                dataset=describe_dataset(cfg), schedule=describe_schedule(cfg),
                                summary=read_summary(path)))
    return infos


def read_summary(path: Path) -> str:
    """The one-line summary a preset declares: its first line, a ``# `` comment ("" if none)."""
    with path.open(encoding="utf-8") as f:
        first = f.readline().strip()
    return first[1:].strip() if first.startswith("#") else ""


def describe_dataset(cfg: Any) -> str:
    """The training set's type and folder, and K: ``CocoDataset data/coco, 80 classes``."""
    train = cfg.data.train
    if train is None:
        text = "no training set"
    elif isinstance(train, DatasetBaseConfig):
        try:
            where = os.path.commonpath([train.ann_file, train.img_prefix])
        except ValueError:  # one absolute, one relative
            where = ""
        text = f"{train.type} {where or train.ann_file}"
    else:
        text = train.type
    num_classes = config_num_classes(cfg.model)
    if num_classes is not None:
        text += f", {num_classes} class{'' if num_classes == 1 else 'es'}"
    return text


def describe_schedule(cfg: Any) -> str:
    """Length, optimizer and lr policy: ``12 epochs, SGD lr 0.01, step at 8, 11``."""
    runner = cfg.runner
    if isinstance(runner, EpochRunnerConfig):
        length = f"{runner.max_epochs} epoch{'' if runner.max_epochs == 1 else 's'}"
    else:
        length = f"{runner.max_iters} iteration{'' if runner.max_iters == 1 else 's'}"
    lr = cfg.lr_config
    policy = lr.policy
    if isinstance(lr, StepLrConfig):
        steps = lr.step if isinstance(lr.step, list) else [lr.step]
        policy = "step at " + ", ".join(map(str, steps))
    return f"{length}, {cfg.optimizer.type} lr {cfg.optimizer.lr:g}, {policy}"
