"""``det data check``: everything wrong with a dataset, counted and listed, none of it fatal.

I images, K classes. :func:`check_dataset` builds the dataset with ``on_bad="skip"`` and no
filtering, so annotation problems are collected instead of raised (an image with an annotation
error is then left out of the counts and the image scan), then looks at the image files:
with ``cheap=True`` (what training runs before it starts) each file's first bytes, which
catch a missing or empty file and one that is not an image of its extension
(:func:`~detcli.data.image_file.header_fault`); otherwise a full decode that also catches
truncated JPEG/PNG files and sizes that disagree with the annotation. A dataset without a
single GT box is a problem of its own (``no_boxes``): there is nothing to train on or to
measure. The full check (not ``cheap``) also checks every segmentation
(:mod:`detcli.data.mask_check`: malformed, degenerate or self-intersecting polygons, RLE of the
wrong size, a mask and its box that disagree). :func:`inspect_dataset` does the second half on
a dataset already built.

Counts: ``num_images`` is the images of the annotation source, ``num_used`` those the dataset
keeps (training drops images without GT, ``filter_empty_gt``), and ``empty_images`` the images
of the source without a GT box, kept or not, so a training run and ``det data check`` report
the same number.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from detcli.config.schema import Schema
from detcli.data.datasets.base import DetDataset
from detcli.data.image_file import header_fault, image_fault
from detcli.data.mask_check import SEGMENTATION_KINDS, segmentation_problems
from detcli.data.problems import (
    BAD_ANNOTATION,
    BOX_OUTSIDE,
    MISNAMED_IMAGE,
    MISSING_FILE,
    NAN_BOX,
    NO_BOXES,
    NON_POSITIVE_BOX,
    SIZE_MISMATCH,
    TINY_BOX,
    TRUNCATED_IMAGE,
    UNKNOWN_CATEGORY,
    UNKNOWN_IMAGE,
    UNREADABLE_IMAGE,
    DataProblem,
    Severity,
    plural,
)
from detcli.errors import DataError, writing
from detcli.registry import DATASETS

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (images done, images in all)

# The report's problem columns: name -> the problem kinds it counts.
PROBLEM_COUNTS: dict[str, tuple[str, ...]] = {
    "degenerate_boxes": (NAN_BOX, NON_POSITIVE_BOX, TINY_BOX),
    "boxes_outside_images": (BOX_OUTSIDE,),
    "unknown_image_or_category": (UNKNOWN_IMAGE, UNKNOWN_CATEGORY),
    "bad_annotations": (BAD_ANNOTATION,),
    "missing_files": (MISSING_FILE,),
    "unreadable_images": (UNREADABLE_IMAGE, TRUNCATED_IMAGE),
    "size_mismatches": (SIZE_MISMATCH,),
    "misnamed_images": (MISNAMED_IMAGE,),
    "bad_segmentations": SEGMENTATION_KINDS,
    "dataset_without_boxes": (NO_BOXES,),
}
# Image-file problems that are legal (the file loads); every other kind the scan finds is an error.
IMAGE_WARNINGS = {MISNAMED_IMAGE}
SPLIT_WORDS = {"train": "training", "val": "validation"}
# The image-file problems LoadImageFromFile fails on (a size mismatch loads).
UNLOADABLE = frozenset({MISSING_FILE, UNREADABLE_IMAGE, TRUNCATED_IMAGE})


@dataclass
class CheckReport:
    """Counts and every problem of one dataset; ``ok`` when no problem is an error."""

    source: str  # the annotation file (or image folder) checked
    dataset_type: str
    split: str | None = None
    cheap: bool = False
    num_images: int = 0  # in the annotation source
    num_used: int = 0  # images the dataset keeps (module docstring)
    num_boxes: int = 0  # GT boxes kept (ignore boxes not included)
    num_ignore_boxes: int = 0
    empty_images: int = 0  # images of the source without a GT box, kept or not
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    problems: list[DataProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def num_errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    def summary(self) -> str:
        """One line of counts: ``200 images (186 used), 512 boxes, 14 without boxes, 1 problem``."""
        used = f" ({self.num_used} used)" if self.num_used != self.num_images else ""
        return (f"{plural(self.num_images, 'image')}{used}, {plural(self.num_boxes, 'box', 'boxes')}, "
                f"{self.empty_images} without boxes, {plural(len(self.problems), 'problem')}")

    def problem_counts(self) -> dict[str, int]:
        """Problems per report column (see PROBLEM_COUNTS)."""
        kinds = Counter(p.kind for p in self.problems)
        return {name: sum(kinds[k] for k in members) for name, members in PROBLEM_COUNTS.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "dataset_type": self.dataset_type, "split": self.split,
            "cheap": self.cheap, "ok": self.ok, "num_images": self.num_images,
            "num_used": self.num_used, "num_boxes": self.num_boxes,
            "num_ignore_boxes": self.num_ignore_boxes,
            "empty_images": self.empty_images, "boxes_per_class": dict(self.boxes_per_class),
            **self.problem_counts(), "problems": [p.to_dict() for p in self.problems],
        }


def image_faults(dataset: DetDataset, *, cheap: bool = False,
                 progress: Progress | None = None) -> list[tuple[int, DataProblem]]:
    """(dataset index, problem) per image file that is not an image of its extension (cheap)
    or cannot be used as annotated (a full decode)."""
    infos = dataset.img_infos

    def one(info: dict[str, Any]) -> tuple[str, str] | None:
        if cheap:
            return header_fault(info["filename"])
        return image_fault(info["filename"], (info["width"], info["height"]))

    found = []
    workers = min(8, os.cpu_count() or 1)  # OpenCV decodes, and files open, without the GIL
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for k, fault in enumerate(pool.map(one, infos, chunksize=16)):
            if fault is not None:
                kind, message = fault
                severity: Severity = "warning" if kind in IMAGE_WARNINGS else "error"
                found.append((k, DataProblem(kind, infos[k]["filename"], message,
                                             image=infos[k]["file_name"], severity=severity)))
            if progress is not None and (k + 1) % 64 == 0:
                progress(k + 1, len(infos))
    if progress is not None:
        progress(len(infos), len(infos))
    return found


def _no_boxes(dataset: DetDataset) -> DataProblem:
    """The ``no_boxes`` problem of a dataset without GT boxes, saying why there are none."""
    report = dataset.filter_report
    if report.num_images == 0:
        why = "it has no images"
    elif report.dropped_bad == report.num_images:
        why = f"every one of its {plural(report.num_images, 'image')} has a bad annotation"
    else:
        reasons = [f"{plural(n, 'box', 'boxes')} {what}" for n, what in (
            (report.dropped_unselected_boxes, "of classes not in `classes`"),
            (report.dropped_tiny_boxes, "under 1 pixel")) if n]
        why = (f"none of its {plural(report.num_images, 'image')} has a box"
               + (f" that is used (dropped: {', '.join(reasons)})" if reasons else ""))
    return DataProblem(
        NO_BOXES, dataset.source,
        f"the dataset has no GT boxes: {why}; there is nothing to train on or to evaluate. "
        "Check ann_file (YOLO and VOC: each image's label file), img_prefix and `classes`")


def inspect_dataset(
    dataset: DetDataset, *, cheap: bool = False, split: str | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """The report of a built dataset: its counts, its load-time problems and an image scan."""
    per_class = dataset.num_gts_per_class()
    problems = list(dataset.problems) + [p for _, p in image_faults(dataset, cheap=cheap,
                                                                    progress=progress)]
    if not cheap:
        problems += segmentation_problems(dataset)
    if per_class.sum() == 0:
        problems.append(_no_boxes(dataset))
    return CheckReport(
        source=dataset.source,
        dataset_type=type(dataset).__name__,
        split=split,
        cheap=cheap,
        num_images=dataset.filter_report.num_images,
        num_used=len(dataset),
        num_boxes=int(per_class.sum()),
        num_ignore_boxes=dataset.num_ignore_boxes,
        empty_images=int((dataset.num_gts_per_image() == 0).sum())
        + dataset.filter_report.dropped_empty,
        boxes_per_class={name: int(n) for name, n in zip(dataset.CLASSES, per_class)},
        problems=problems,
    )


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def check_dataset(
    dataset_cfg: Schema, *, cheap: bool = False, split: str | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """Every problem of the dataset ``dataset_cfg`` describes; raises nothing for bad data.

    An annotation source that cannot be read at all (missing file, not COCO, an unknown name in
    ``classes``) gives a report with that one problem.
    """
    unfiltered = {k: v for k, v in {"filter_empty_gt": False, "min_size": 0, "pipeline": []}.items()
                  if k in type(dataset_cfg).model_fields}
    cfg = dataset_cfg.model_copy(update=unfiltered)
    try:
        with _quiet(logging.getLogger("detcli.data.datasets")):  # the report lists it all
            dataset = DATASETS.build(cfg, on_bad="skip")
    except DataError as exc:
        source = str(getattr(cfg, "ann_file", None) or getattr(cfg, "img_prefix", "?"))
        message = str(exc) + (f" ({exc.hint})" if exc.hint else "")
        return CheckReport(source=source, dataset_type=cfg.type, split=split, cheap=cheap,  # type: ignore[attr-defined]
                           problems=[DataProblem(BAD_ANNOTATION, source, message)])
    return inspect_dataset(dataset, cheap=cheap, split=split, progress=progress)


def check_before_training(
    datasets: dict[str, DetDataset], *, on_bad: str = "stop", problem_file: Path | None = None,
) -> list[CheckReport]:
    """The cheap check of the datasets a training run uses (``{"train": ..., "val": ...}``),
    before its first step; each report is logged as one line.

    A training set without GT boxes stops the run (DataError), whatever ``on_bad`` says. With
    ``on_bad="stop"`` any error stops it too, naming the first five; with ``"skip"`` the
    problems are written to ``problem_file`` (unless None) and the run goes on without them.
    """
    reports = [inspect_dataset(dataset, cheap=True, split=split)
               for split, dataset in datasets.items()]
    for report in reports:
        log.info("%s data: %s (%s)", report.split, report.summary(), report.source)
    for report in reports:
        empty = next((p for p in report.problems if p.kind == NO_BOXES), None)
        if empty is not None and report.split == "train":
            raise DataError(f"the training set {empty}",
                            hint="`det data check CONFIG --split train` shows what it holds")
    errors = [(r.split, p) for r in reports for p in r.problems if p.severity == "error"]
    if errors and on_bad == "stop":
        counts = Counter(split for split, _ in errors)
        where = " and ".join(f"{plural(n, 'problem')} in the {SPLIT_WORDS.get(split, split)} data"
                             for split, n in counts.items())
        raise DataError(f"{where}: " + "; ".join(str(p) for _, p in errors[:5])
                        + (f"; ... and {len(errors) - 5} more" if len(errors) > 5 else ""),
                        hint="run `det data check CONFIG` for the full list, or set "
                             "data.on_bad_image = \"skip\" to train without them")
    problems = [p for r in reports for p in r.problems]
    if problems and problem_file is not None:
        path = write_problem_list(problems, problem_file)
        log.warning("%s skipped; the list is in %s", plural(len(problems), "dataset problem"), path)
    return reports


def write_problem_list(problems: list[DataProblem], path: str | Path) -> Path:
    """The problems as text, one a line (the list ``on_bad_image = "skip"`` leaves behind)."""
    path = Path(path)
    with writing(path, "the problem list"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{p.severity}\t{p.kind}\t{p}\n" for p in problems))
    return path
