"""``det data check``: everything wrong with a dataset, counted and listed, none of it fatal.

I images, K classes. :func:`check_dataset` builds the dataset with ``on_bad="skip"`` and no
filtering, so annotation problems are collected instead of raised (an image with an annotation
error is then left out of the counts and the image scan), then looks at the image files:
existence only with ``cheap=True`` (what training runs before it starts), or a full decode
that also catches truncated JPEG/PNG files and sizes that disagree with the annotation.
:func:`inspect_dataset` does the second half on a dataset already built.
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
from detcli.data.image_file import image_fault
from detcli.data.problems import (
    BAD_ANNOTATION,
    BOX_OUTSIDE,
    MISSING_FILE,
    NAN_BOX,
    NON_POSITIVE_BOX,
    SIZE_MISMATCH,
    TINY_BOX,
    TRUNCATED_IMAGE,
    UNKNOWN_CATEGORY,
    UNKNOWN_IMAGE,
    UNREADABLE_IMAGE,
    DataProblem,
)
from detcli.errors import DataError
from detcli.registry import DATASETS

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
}


@dataclass
class CheckReport:
    """Counts and every problem of one dataset; ``ok`` when no problem is an error."""

    source: str  # the annotation file (or image folder) checked
    dataset_type: str
    split: str | None = None
    cheap: bool = False
    num_images: int = 0  # in the annotation source
    num_boxes: int = 0  # GT boxes kept (ignore boxes not included)
    num_ignore_boxes: int = 0
    empty_images: int = 0  # images without a GT box
    boxes_per_class: dict[str, int] = field(default_factory=dict)
    problems: list[DataProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def num_errors(self) -> int:
        return sum(p.severity == "error" for p in self.problems)

    def problem_counts(self) -> dict[str, int]:
        """Problems per report column (see PROBLEM_COUNTS)."""
        kinds = Counter(p.kind for p in self.problems)
        return {name: sum(kinds[k] for k in members) for name, members in PROBLEM_COUNTS.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "dataset_type": self.dataset_type, "split": self.split,
            "cheap": self.cheap, "ok": self.ok, "num_images": self.num_images,
            "num_boxes": self.num_boxes, "num_ignore_boxes": self.num_ignore_boxes,
            "empty_images": self.empty_images, "boxes_per_class": dict(self.boxes_per_class),
            **self.problem_counts(), "problems": [p.to_dict() for p in self.problems],
        }


def _scan_images(dataset: DetDataset, cheap: bool, progress: Progress | None) -> list[DataProblem]:
    """A problem per image file that is missing (cheap) or cannot be used as annotated."""
    infos = dataset.img_infos

    def one(info: dict[str, Any]) -> tuple[str, str] | None:
        if cheap:
            return None if os.path.isfile(info["filename"]) else (MISSING_FILE, "image file does not exist")
        return image_fault(info["filename"], (info["width"], info["height"]))

    problems = []
    workers = 1 if cheap else min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # OpenCV decodes without the GIL
        for k, fault in enumerate(pool.map(one, infos, chunksize=16)):
            if fault is not None:
                kind, message = fault
                problems.append(DataProblem(kind, infos[k]["filename"], message,
                                            image=infos[k]["file_name"]))
            if progress is not None and (k + 1) % 64 == 0:
                progress(k + 1, len(infos))
    if progress is not None:
        progress(len(infos), len(infos))
    return problems


def inspect_dataset(
    dataset: DetDataset, *, cheap: bool = False, split: str | None = None,
    progress: Progress | None = None,
) -> CheckReport:
    """The report of a built dataset: its counts, its load-time problems and an image scan."""
    per_class = dataset.num_gts_per_class()
    return CheckReport(
        source=dataset.source,
        dataset_type=type(dataset).__name__,
        split=split,
        cheap=cheap,
        num_images=dataset.filter_report.num_images,
        num_boxes=int(per_class.sum()),
        num_ignore_boxes=dataset.num_ignore_boxes,
        empty_images=int((dataset.num_gts_per_image() == 0).sum()),
        boxes_per_class={name: int(n) for name, n in zip(dataset.CLASSES, per_class)},
        problems=list(dataset.problems) + _scan_images(dataset, cheap, progress),
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


def write_problem_list(problems: list[DataProblem], path: str | Path) -> Path:
    """The problems as text, one a line (the list ``on_bad_image = "skip"`` leaves behind)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{p.severity}\t{p.kind}\t{p}\n" for p in problems))
    return path
