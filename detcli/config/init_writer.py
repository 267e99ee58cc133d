"""``det init``'s decisions and its output: which preset to start from, and the config file.

K classes. :func:`suggest_preset` picks a base preset from the training split and the machine,
by one rule with its reason in words:

1. no GPU: ``retinanet_tiny_synth`` (a RetinaNet at a quarter of ResNet-18's width, 256-pixel
   images, trained from scratch): the ResNet-50 presets at 1333x800 take minutes per
   iteration batch on a CPU;
2. a GPU and at least ``SMALL_SHARE`` of the objects small (under 32² pixels) at the preset's
   input size: ``atss_r50``, whose assigner picks positives per object by IoU statistics and so
   finds some for small objects where a fixed IoU threshold finds none;
3. otherwise ``retinanet_r50`` (ImageNet-pretrained ResNet-50, COCO's 1x schedule).

:func:`write_init_config` writes a config that ``extends`` the preset by name and sets what
differs: the class count under the model's ``num_classes`` key, and ``data.train`` /
``data.val`` / ``data.test`` with absolute paths (they work from any directory) and the class
names. When the dataset type differs from the preset's (YOLO or VOC data on a COCO preset),
the preset's pipeline of that split is written too: a table whose ``type`` changes is replaced
whole. Split files (a seeded val split, image lists) go to a folder beside the config.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from detcli.analysis.pipeline_geometry import network_input_geometry
from detcli.config.emit import to_toml
from detcli.config.loader import LoadedConfig, display_path, load_config
from detcli.data.discover import DataLayout
from detcli.data.survey import SplitSurvey, dataset_kwargs, write_split_files
from detcli.models.introspect import num_classes_key

CPU_PRESET = "retinanet_tiny_synth"
GPU_PRESET = "retinanet_r50"
SMALL_OBJECTS_PRESET = "atss_r50"
SMALL_SHARE = 0.3
SMALL_SIDE = 32  # COCO's small objects: area under 32² in network-input pixels


@dataclass
class PresetChoice:
    name: str
    reason: str
    small_share: Optional[float] = None  # objects under 32² pixels at the preset's input size


def input_sides(preset: LoadedConfig, survey: SplitSurvey) -> np.ndarray:
    """(G,) sqrt(box area) of the survey's GT boxes at the preset's test input size."""
    if not len(survey.box_wh):
        return np.zeros(0)
    geometry = network_input_geometry(preset.cfg.data, "val")
    _, _, factors = geometry.shapes(survey.image_wh[:, 1], survey.image_wh[:, 0])  # (I, 2) sx, sy
    wh = survey.box_wh * factors[survey.box_image]  # (G, 2)
    return np.sqrt(wh.prod(axis=1))


def suggest_preset(train: SplitSurvey, gpu: bool) -> PresetChoice:
    """The rule of the module docstring, applied to the training split."""
    images = f"{train.num_images} training images"
    if not gpu:
        share = _small_share(CPU_PRESET, train)
        small = f"; {share:.0%} of the objects are under 32x32 px at its 256 px" if share is not None else ""
        return PresetChoice(CPU_PRESET, f"no GPU here: a small RetinaNet (ResNet-18 at 1/4 width, "
                            f"256 px images) trains on a CPU in minutes ({images}{small})", share)
    share = _small_share(SMALL_OBJECTS_PRESET, train)
    if share is not None and share >= SMALL_SHARE:
        return PresetChoice(SMALL_OBJECTS_PRESET, f"GPU; {share:.0%} of the objects are under 32x32 px "
                            "at 1333x800: ATSS's adaptive assigner gives small objects positives "
                            f"a fixed IoU threshold misses ({images})", share)
    small = f", {share:.0%} of the objects under 32x32 px at 1333x800" if share is not None else ""
    return PresetChoice(GPU_PRESET, f"GPU: RetinaNet with an ImageNet-pretrained ResNet-50, COCO's "
                        f"1x schedule ({images}{small})", share)


def _small_share(preset: str, survey: SplitSurvey) -> Optional[float]:
    sides = input_sides(load_config(preset), survey)
    return float((sides < SMALL_SIDE).mean()) if len(sides) else None


@dataclass
class SplitPlan:
    """How ``det init`` fills ``data.val`` when the data has no val split."""

    fraction: float  # 0: no val split (data.val = false)
    seed: int = 0
    train_index: Optional[np.ndarray] = None  # into the train survey's image_keys
    val_index: Optional[np.ndarray] = None


@dataclass
class WrittenConfig:
    path: Path
    files: list[Path] = field(default_factory=list)  # split files written beside it
    command: str = ""  # the `det train` line to run next
    shown: str = ""  # the config's path as the command names it


def splits_dir(out: Path) -> Path:
    """Where a config's split files go: ``<config stem>.splits/`` beside it."""
    return out.parent / f"{out.stem}.splits"


def _pipeline(preset: LoadedConfig, split: str) -> Optional[list[Any]]:
    table = preset.raw.get("data", {}).get(split)
    return table.get("pipeline") if isinstance(table, dict) else None


def _preset_type(preset: LoadedConfig, split: str) -> Optional[str]:
    table = preset.raw.get("data", {}).get(split)
    return table.get("type") if isinstance(table, dict) else None


def _dataset_table(layout: DataLayout, survey: SplitSurvey, classes: Sequence[str], ann_file: Optional[Path],
                   preset: LoadedConfig, split: str) -> dict[str, Any]:
    table = dataset_kwargs(layout, survey.source, classes, ann_file)
    if _preset_type(preset, split) != table["type"]:
        pipeline = _pipeline(preset, split)
        if pipeline is not None:
            table["pipeline"] = pipeline
    return table


def _nested(key: str, value: Any) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return tree


def _num_classes_tree(preset: LoadedConfig, num_classes: int) -> dict[str, Any]:
    """K where the preset keeps it: the box head's, and the mask head's of a preset with masks
    (its masks are of the boxes' classes). A per-stage list of heads (Cascade R-CNN's
    ``model.roi_head.bbox_head``) is written whole, every stage with K: a config's array
    replaces its base's, so one stage's key cannot be set alone."""
    roi_head = preset.raw.get("model", {}).get("roi_head", {})
    box_heads, mask_heads = roi_head.get("bbox_head"), roi_head.get("mask_head")
    if isinstance(box_heads, list):
        tree = {"model": {"roi_head": {
            "bbox_head": [{**head, "num_classes": num_classes} for head in box_heads]}}}
    else:
        tree = _nested(num_classes_key(preset.cfg.model), num_classes)
    if isinstance(mask_heads, list):
        _merge(tree, {"model": {"roi_head": {
            "mask_head": [{**head, "num_classes": num_classes} for head in mask_heads]}}})
    elif isinstance(mask_heads, dict):
        _merge(tree, {"model": {"roi_head": {"mask_head": {"num_classes": num_classes}}}})
    return tree


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _ann_file(layout: DataLayout, survey: SplitSurvey, keep: Optional[np.ndarray], folder: Path,
              name: str, files: list[Path]) -> Optional[Path]:
    """The split's annotation file: the user's own, or one written into ``folder`` (a subset
    ``keep`` of the images, or the list of a split that has none)."""
    if keep is None and survey.source.members is None:
        return survey.source.ann_file  # None for a YOLO folder: every image under img_prefix
    path = write_split_files(layout, survey, keep, folder, name)
    files.append(path)
    return path


def write_init_config(layout: DataLayout, classes: Sequence[str], surveys: dict[str, SplitSurvey],
                      preset_name: str, out: Path, split: SplitPlan, header: str) -> WrittenConfig:
    """Write the config (module docstring) and its split files; the config is validated by
    loading it before this returns."""
    preset = load_config(preset_name)
    out = out.expanduser().resolve()
    folder = splits_dir(out)
    files: list[Path] = []
    train = surveys["train"]
    # (survey, annotation file) of each split the config names
    chosen: dict[str, tuple[SplitSurvey, Optional[Path]]] = {}
    if "val" not in surveys and split.fraction > 0:
        chosen["train"] = (train, _ann_file(layout, train, split.train_index, folder, "train", files))
        chosen["val"] = (train, _ann_file(layout, train, split.val_index, folder, "val", files))
    else:
        chosen["train"] = (train, _ann_file(layout, train, None, folder, "train", files))
        if "val" in surveys:
            chosen["val"] = (surveys["val"], _ann_file(layout, surveys["val"], None, folder, "val", files))
    if "test" in surveys:
        chosen["test"] = (surveys["test"], _ann_file(layout, surveys["test"], None, folder, "test", files))
    elif "val" in chosen:
        chosen["test"] = chosen["val"]  # `det test` evaluates on the val split, as the presets do
    tree: dict[str, Any] = {"extends": preset_name}
    _merge(tree, _num_classes_tree(preset, len(classes)))
    tree["data"] = {name: (_dataset_table(layout, chosen[name][0], classes, chosen[name][1], preset, name)
                           if name in chosen else False) for name in ("train", "val", "test")}
    _atomic_write(out, to_toml(tree, header=header))
    load_config(out)  # what `det train` will do first: fail here, not there
    shown = shlex.quote(display_path(out))
    return WrittenConfig(out, files, f"det train {shown}", shown)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
