"""The presets shipped inside the package, and the one rule that turns a config reference into a file.

A reference is what a user writes for a config: the CONFIG argument of every command, or an
entry of ``extends``. :func:`resolve_reference` resolves it the same way everywhere:

1. a path that exists wins: relative to the current directory for CONFIG, to the file that
   names it for ``extends``;
2. otherwise it is a preset name: the preset's path under ``detcli/presets`` without
   ``.toml`` (``retinanet_r50``, ``_base/models/retinanet_r50_fpn``). A ``.toml`` suffix and a
   leading ``presets/`` are accepted, so the documented ``presets/retinanet_r50.toml`` also
   works where there is no ``presets/`` folder (an installed package);
3. anything else is a :class:`ConfigError` that says where it looked and lists the closest
   names.

:func:`list_presets` describes each top-level preset (not ``_base/``): family, backbone,
dataset and schedule come from its resolved config, and the summary from its first line, a
``# `` comment (the one convention a preset file follows beyond the config language).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from detcli.errors import ConfigError

SUFFIX = ".toml"
BASES = "_base"


def presets_dir() -> Path:
    """The folder of packaged presets (``detcli/presets`` in the installed package)."""
    root = resources.files("detcli").joinpath("presets")
    if not isinstance(root, Path):  # a zipped install: presets would need extracting first
        raise ConfigError(f"the packaged presets are not a folder on disk ({root})",
                          hint="install detcli as files (pip install), not as a zip")
    return root


def preset_names(*, bases: bool = False, root: Path | None = None) -> list[str]:
    """Every preset's name, sorted; with ``bases`` the ``_base/...`` fragments too."""
    root = presets_dir() if root is None else root
    names = [p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{SUFFIX}")]
    return sorted(n for n in names if bases or not n.startswith(f"{BASES}/"))


def preset_path(name: str, *, root: Path | None = None) -> Path | None:
    """The file of the preset ``name`` (see the module docstring for the accepted spellings),
    or None when there is none."""
    root = presets_dir() if root is None else root
    for candidate in _name_candidates(name):
        path = root.joinpath(*candidate.parts).with_suffix(SUFFIX)
        if path.is_file():
            return path
    return None


def _name_candidates(ref: str) -> list[PurePosixPath]:
    """The preset names a reference may mean: itself without ``.toml``, and without a leading
    ``presets/``. Absolute references and ``..`` never name a preset."""
    pure = PurePosixPath(ref.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return []
    if pure.suffix == SUFFIX:
        pure = pure.with_suffix("")
    candidates = [pure]
    if len(pure.parts) > 1 and pure.parts[0] == "presets":
        candidates.append(PurePosixPath(*pure.parts[1:]))
    return candidates


def resolve_reference(ref: str | Path, *, referrer: Path | None = None) -> Path:
    """The file a config reference means: ``ref`` as a path if it exists (relative to
    ``referrer``'s folder when given, the file whose ``extends`` names it), else the packaged
    preset it names; a :class:`ConfigError` naming where it looked otherwise."""
    from detcli.config.loader import display_path

    text = str(ref)
    path = Path(text).expanduser()
    if referrer is not None and not path.is_absolute():
        path = referrer.parent / path
    if path.exists():  # a path that exists wins (a folder fails when it is read, with its message)
        return path
    packaged = preset_path(text)
    if packaged is not None:
        return packaged
    name = (_name_candidates(text) or [PurePosixPath(text)])[-1].as_posix()
    looked = f"{display_path(path)} does not exist, and no packaged preset is named {name!r} " \
             f"(in {presets_dir()})"
    close = suggest_presets(text)
    did_you_mean = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    if referrer is None:
        raise ConfigError(f"config file {looked}",
                          hint=f"{did_you_mean}a config is a TOML file or the name of a preset; "
                               "`det presets` lists them")
    raise ConfigError(f"{display_path(referrer)} extends {text!r}, but {looked}",
                      hint=f"{did_you_mean}paths in `extends` are relative to the file that names "
                           "them; a name is a packaged preset (`det presets` lists them)")


def suggest_presets(ref: str, n: int = 3) -> list[str]:
    """The preset names closest to ``ref`` (top-level presets before ``_base/`` ones)."""
    candidates = _name_candidates(ref)
    if not candidates:
        return []
    wanted = candidates[-1].as_posix()
    names = preset_names(bases=True)
    top = difflib.get_close_matches(wanted, preset_names(), n=n, cutoff=0.6)
    rest = [m for m in difflib.get_close_matches(wanted, names, n=n, cutoff=0.6) if m not in top]
    return (top + rest)[:n]


@dataclass(frozen=True)
class PresetInfo:
    """One preset as ``det presets`` lists it."""

    name: str
    path: Path
    family: str  # the detector type: RetinaNet, FCOS, ATSS, FasterRCNN
    backbone: str  # "ResNet-50", "ResNet-18 (1/4 width)"
    dataset: str  # "CocoDataset data/coco, 80 classes"
    schedule: str  # "12 epochs, SGD lr 0.01, step at 8, 11"
    summary: str  # the file's first line, a `# ` comment

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "file": str(self.path), "family": self.family,
                "backbone": self.backbone, "dataset": self.dataset, "schedule": self.schedule,
                "summary": self.summary}


def list_presets(root: Path | None = None) -> list[PresetInfo]:
    """Every top-level preset under ``root`` (default: the packaged ones), described from its
    resolved config."""
    from detcli.config.loader import load_config

    root = presets_dir() if root is None else root
    infos = []
    for name in preset_names(root=root):
        path = root.joinpath(*name.split("/")).with_suffix(SUFFIX)
        cfg = load_config(path).cfg
        infos.append(PresetInfo(name=name, path=path, family=cfg.model.type,
                                backbone=describe_backbone(cfg.model.backbone),
                                dataset=describe_dataset(cfg), schedule=describe_schedule(cfg),
                                summary=read_summary(path)))
    return infos


def read_summary(path: Path) -> str:
    """The one-line summary a preset declares: its first line, a ``# `` comment ("" if none)."""
    with path.open(encoding="utf-8") as f:
        first = f.readline().strip()
    return first[1:].strip() if first.startswith("#") else ""


def describe_backbone(backbone: Any) -> str:
    """``ResNet-50``, ``ResNet-50 caffe``, ``ResNet-18 (1/4 width)``; other backbones by type."""
    from detcli.models.backbones.resnet import ResNetConfig

    if not isinstance(backbone, ResNetConfig):
        return backbone.type
    text = f"ResNet-{backbone.depth}" + (" caffe" if backbone.style == "caffe" else "")
    default_width = ResNetConfig.model_fields["base_channels"].default
    if backbone.base_channels != default_width:
        text += f" ({Fraction(backbone.base_channels, default_width)} width)"
    return text


def describe_dataset(cfg: Any) -> str:
    """The training set's type and folder, and K: ``CocoDataset data/coco, 80 classes``."""
    from detcli.data.datasets.base import DatasetBaseConfig
    from detcli.models.introspect import config_num_classes

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
    from detcli.engine.config import EpochRunnerConfig, StepLrConfig

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
