"""Reading a COCO annotation file into flat arrays, with a clear error for every malformed part.

I images, A annotations, C categories. ``bbox`` stays COCO's (x, y, w, h) here; the dataset
converts it. Structural faults (a missing file, bad JSON, a key missing, a duplicate id) always
raise :class:`~detcli.errors.DataError`: nothing sensible can be skipped. Faults of single
annotations (unknown image or category, bad numbers) are left to the caller, which may skip
them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detcli.data.paths import lookup_note
from detcli.errors import DataError

COCO_HINT = "a COCO file is a JSON object with `images`, `annotations` and `categories` lists"


@dataclass
class CocoArrays:
    """The annotations of a COCO file as arrays, in file order."""

    ids: np.ndarray  # (A,) int64 annotation ids
    image_ids: np.ndarray  # (A,) int64
    category_ids: np.ndarray  # (A,) int64
    bbox_xywh: np.ndarray  # (A, 4) float64; NaN stays NaN
    area: np.ndarray  # (A,) float64; w * h where the file has no `area`
    iscrowd: np.ndarray  # (A,) bool
    segmentation: list[Any] = field(default_factory=list)  # (A,) as written; None where absent


def read_coco_json(path: str | Path, *, need_annotations: bool = True) -> dict[str, Any]:
    """The parsed file, checked to be COCO-shaped: top-level lists present, images non-empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotation file {path} does not exist"
                        + (" (it is a directory)" if path.is_dir() else lookup_note(path)))
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise DataError(f"annotation file {path} is empty", hint=COCO_HINT)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"annotation file {path} is not valid JSON: {exc}", hint=COCO_HINT) from None
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a COCO annotation file: its top level is a "
                        f"{type(data).__name__}, not an object", hint=COCO_HINT)
    required = ("images", "annotations", "categories") if need_annotations else ("images", "categories")
    for key in required:
        if not isinstance(data.get(key), list):
            found = ", ".join(sorted(map(str, data))) or "none"
            raise DataError(f"{path} is not a COCO annotation file: it has no `{key}` list "
                            f"(top-level keys: {found})", hint=COCO_HINT)
    data.setdefault("annotations", [])
    if not data["images"]:
        raise DataError(f"annotation file {path} has no images")
    return data


def _column(records: list[Any], key: str, section: str, path: Path, default: Any = ...) -> list[Any]:
    """``[r[key] for r in records]``, naming the first record that lacks the key."""
    try:
        if default is ...:
            return [r[key] for r in records]
        return [r.get(key, default) for r in records]
    except (KeyError, TypeError, AttributeError):
        for k, r in enumerate(records):
            if not isinstance(r, dict):
                raise DataError(f"{path}: {section}[{k}] is a {type(r).__name__}, not an object",
                                hint=COCO_HINT) from None
            if key not in r:
                what = f" (id {r['id']})" if "id" in r else ""
                raise DataError(f"{path}: {section}[{k}]{what} has no `{key}`", hint=COCO_HINT) from None
        raise


def _ints(values: list[Any], what: str, section: str, path: Path) -> np.ndarray:
    """Integer ids as an (n,) int64 array, naming the first value that is not an integer."""
    for k, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DataError(f"{path}: {section}[{k}] has {what} {v!r}, which is not an integer")
    return np.array(values, dtype=np.int64).reshape(-1)


def _unique(ids: np.ndarray, section: str, path: Path) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1]
        raise DataError(f"{path}: {section} ids must be unique; {len(dup)} repeat, "
                        f"e.g. id {int(dup[0])} ({int(counts[counts > 1][0])} times)")


def image_table(data: dict[str, Any], path: Path) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """(I,) image ids and the image records, each with a positive width and height."""
    images = data["images"]
    ids = _ints(_column(images, "id", "images", path), "id", "images", path)
    _unique(ids, "image", path)
    _column(images, "file_name", "images", path)
    for key in ("width", "height"):
        for k, v in enumerate(_column(images, key, "images", path)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise DataError(f"{path}: image {images[k]['id']} ({images[k]['file_name']}) "
                                f"has {key} {v!r}; it must be a positive number")
    return ids, images


def category_table(data: dict[str, Any], path: Path) -> tuple[np.ndarray, list[str]]:
    """(C,) category ids and their names, in file order."""
    cats = data["categories"]
    ids = _ints(_column(cats, "id", "categories", path), "id", "categories", path)
    _unique(ids, "category", path)
    names = [str(n) for n in _column(cats, "name", "categories", path)]
    if not cats:
        raise DataError(f"annotation file {path} has no categories", hint=COCO_HINT)
    return ids, names


def annotation_arrays(data: dict[str, Any], path: Path) -> CocoArrays:
    """The annotations as arrays; a bbox that is not four numbers names its annotation."""
    anns = data["annotations"]
    ids = _ints(_column(anns, "id", "annotations", path), "id", "annotations", path)
    _unique(ids, "annotation", path)
    image_ids = _ints(_column(anns, "image_id", "annotations", path), "image_id", "annotations", path)
    category_ids = _ints(_column(anns, "category_id", "annotations", path),
                         "category_id", "annotations", path)
    bboxes = _column(anns, "bbox", "annotations", path)
    try:
        bbox = np.array(bboxes, dtype=np.float64).reshape(len(anns), 4)  # (A, 4) x y w h
    except (ValueError, TypeError):
        for k, b in enumerate(bboxes):
            if not (isinstance(b, list) and len(b) == 4
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b)):
                raise DataError(f"{path}: annotation {anns[k]['id']} has bbox {b!r}; "
                                "it must be four numbers [x, y, width, height]") from None
        raise
    area = np.array([math.nan if a is None else a for a in _column(anns, "area", "annotations", path,
                                                                   default=None)], dtype=np.float64)
    area = np.where(np.isnan(area), bbox[:, 2] * bbox[:, 3], area).reshape(-1)  # (A,)
    iscrowd = np.array(_column(anns, "iscrowd", "annotations", path, default=0), dtype=bool).reshape(-1)
    segmentation = _column(anns, "segmentation", "annotations", path, default=None)
    return CocoArrays(ids, image_ids, category_ids, bbox, area, iscrowd, segmentation)
