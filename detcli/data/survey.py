"""What a discovered dataset holds, split by split, and a seeded validation split (``det init``).

I images, G GT boxes of a split. :func:`survey_split` builds the split's dataset as
``det data check --cheap`` does (bad annotations collected, not raised; no filtering; image
files checked for existence only) and adds what choosing a preset needs: every image's size
and every GT box's size. :func:`write_split_files` writes the lists and annotation files a
config then names (a VOC image-set list, a YOLO image list, or COCO files holding a subset
of the images) into a folder of ``det init``'s: the user's data is never changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from detcli.data.check import CheckReport, inspect_dataset
from detcli.data.datasets.base import DetDataset
from detcli.data.datasets.yolo import IMAGE_SUFFIXES
from detcli.data.discover import DataLayout, SplitSource
from detcli.data.problems import BAD_ANNOTATION, DataProblem
from detcli.errors import DataError
from detcli.registry import DATASETS

SMALL, MEDIUM = 32, 96  # COCO's size limits, as the side of a square of the box's area


@dataclass
class SplitSurvey:
    """One split: the cheap check's report, and the sizes behind the box-size table."""

    name: str
    source: SplitSource
    report: CheckReport
    image_wh: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (I, 2) width, height
    box_wh: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (G, 2) original pixels
    box_image: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (G,) into images
    image_keys: list[str] = field(default_factory=list)  # every image, as a split file lists it

    @property
    def num_images(self) -> int:
        return len(self.image_keys) or self.report.num_images

    def size_counts(self) -> dict[str, int]:
        """GT boxes per COCO size (original pixels): small < 32², medium < 96², large."""
        side = np.sqrt(self.box_wh.prod(axis=1))  # (G,)
        return {"small": int((side < SMALL).sum()),
                "medium": int(((side >= SMALL) & (side < MEDIUM)).sum()),
                "large": int((side >= MEDIUM).sum())}

    def side_quantiles(self) -> Optional[tuple[float, float, float]]:
        """(5 %, median, 95 %) of sqrt(box area) in original pixels; None without boxes."""
        if not len(self.box_wh):
            return None
        q = np.quantile(np.sqrt(self.box_wh.prod(axis=1)), [0.05, 0.5, 0.95])
        return float(q[0]), float(q[1]), float(q[2])


def dataset_kwargs(layout: DataLayout, source: SplitSource, classes: Sequence[str],
                   ann_file: Optional[Path]) -> dict[str, Any]:
    """The dataset config of ``source`` (without pipeline), as written into the config."""
    cfg: dict[str, Any] = {"type": layout.dataset_type}
    if ann_file is not None:
        cfg["ann_file"] = str(ann_file)
    cfg["img_prefix"] = str(source.img_prefix)
    cfg["classes"] = list(classes)
    return cfg


def _build(cfg: dict[str, Any]) -> DetDataset:
    cls = DATASETS.get(cfg["type"])
    kwargs = {k: v for k, v in cfg.items() if k != "type"}
    return cls(**kwargs, filter_empty_gt=False, on_bad="skip")


def source_keys(layout: DataLayout, source: SplitSource, ann_file: Optional[Path]) -> list[str]:
    """Every image of a split as a split file lists it, bad ones included: COCO image ids, VOC
    image ids, YOLO paths relative to ``img_prefix``."""
    if source.members is not None:
        return list(source.members)
    if layout.format == "coco":
        assert ann_file is not None
        return [str(i["id"]) for i in json.loads(ann_file.read_text(encoding="utf-8"))["images"]]
    if layout.format == "voc":
        assert ann_file is not None
        return [line.split()[0] for line in ann_file.read_text().splitlines() if line.strip()]
    prefix = source.img_prefix
    return [p.relative_to(prefix).as_posix() for p in sorted(prefix.rglob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES]


def survey_split(layout: DataLayout, source: SplitSource, classes: Sequence[str],
                 ann_file: Optional[Path]) -> SplitSurvey:
    """The cheap check of one split plus its image and box sizes; a split whose annotations
    cannot be read at all gives a report with that one problem."""
    cfg = dataset_kwargs(layout, source, classes, ann_file)
    try:
        dataset = _build(cfg)
    except DataError as exc:
        where = cfg.get("ann_file", cfg["img_prefix"])
        message = str(exc) + (f" ({exc.hint})" if exc.hint else "")
        report = CheckReport(source=where, dataset_type=cfg["type"], split=source.name, cheap=True,
                             problems=[DataProblem(BAD_ANNOTATION, where, message)])
        return SplitSurvey(source.name, source, report, image_keys=_keys_or_none(layout, source, ann_file))
    report = inspect_dataset(dataset, cheap=True, split=source.name)
    anns = [dataset.get_ann_info(i)["bboxes"] for i in range(len(dataset))]
    boxes = np.concatenate(anns) if anns else np.zeros((0, 4), np.float32)  # (G, 4)
    return SplitSurvey(
        source.name, source, report,
        image_wh=np.array([[i["width"], i["height"]] for i in dataset.img_infos], np.float64).reshape(-1, 2),
        box_wh=(boxes[:, 2:] - boxes[:, :2]).astype(np.float64),
        box_image=np.repeat(np.arange(len(anns)), [len(a) for a in anns]),
        image_keys=source_keys(layout, source, ann_file),
    )


def _keys_or_none(layout: DataLayout, source: SplitSource, ann_file: Optional[Path]) -> list[str]:
    try:
        return source_keys(layout, source, ann_file)
    except (OSError, ValueError, KeyError, TypeError):
        return []


def seeded_split(num_images: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) image indices, each sorted: ``round(fraction * num_images)`` images (at
    least one, and at least one left to train on) drawn with numpy's generator of ``seed``."""
    if not 0 < fraction < 1:
        raise DataError(f"--val-split must be between 0 and 1 (a share of the images), not {fraction:g}")
    if num_images < 2:
        raise DataError(f"cannot split {num_images} image(s) into train and val",
                        hint="add images, or give a val split of your own")
    num_val = min(max(1, round(fraction * num_images)), num_images - 1)
    order = np.random.default_rng(seed).permutation(num_images)  # (I,)
    return np.sort(order[num_val:]), np.sort(order[:num_val])


def _coco_subset(ann_file: Path, image_ids: set[int]) -> dict[str, Any]:
    data = json.loads(ann_file.read_text(encoding="utf-8"))
    return {**data, "images": [i for i in data["images"] if i["id"] in image_ids],
            "annotations": [a for a in data["annotations"] if a.get("image_id") in image_ids]}


def write_split_files(layout: DataLayout, survey: SplitSurvey, keep: Optional[np.ndarray],
                      out_dir: Path, name: str) -> Path:
    """The annotation file for split ``name``: the images ``keep`` (indices into
    ``survey.image_keys``, every image of the source, bad ones included; None: all) of
    ``survey``'s split, written under ``out_dir``.
    COCO: ``name.json`` with those images and their annotations; VOC: ``name.txt`` of image
    ids; YOLO: ``name.txt`` of image paths relative to the split's ``img_prefix``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = survey.image_keys if keep is None else [survey.image_keys[i] for i in keep]
    if layout.format == "coco":
        assert survey.source.ann_file is not None
        path = out_dir / f"{name}.json"
        subset = _coco_subset(survey.source.ann_file, {int(k) for k in keys})
        path.write_text(json.dumps(subset) + "\n", encoding="utf-8")
        return path
    path = out_dir / f"{name}.txt"
    path.write_text("".join(f"{k}\n" for k in keys), encoding="utf-8")
    return path


def survey_layout(layout: DataLayout, classes: Sequence[str], scratch: Path) -> dict[str, SplitSurvey]:
    """:func:`survey_split` of every split of ``layout``; a split known only by its list of
    images (``members``) is surveyed through that list written into ``scratch``."""
    surveys = {}
    for name, source in layout.splits.items():
        ann_file = source.ann_file
        if source.members is not None:
            scratch.mkdir(parents=True, exist_ok=True)
            ann_file = scratch / f"{name}.txt"
            ann_file.write_text("".join(f"{m}\n" for m in source.members), encoding="utf-8")
        surveys[name] = survey_split(layout, source, classes, ann_file)
    return surveys
