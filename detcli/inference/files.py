"""What ``det predict`` reads and writes: which image files the INPUTs name, and the
COCO-style records and pictures of their detections.

D detections of one image, K classes.

An INPUT is an image file, a folder (its image files, sub-folders included) or a glob pattern
(``"data/*.jpg"``, ``"shots/**/*.png"``; quote it so the shell leaves it alone). Folders and
globs contribute files with an image suffix; a file named explicitly is always taken (if it is
not an image, reading it fails and ``det predict`` reports it). The result is sorted and
without duplicates. A folder without images, a pattern without matches or a path that does not
exist is a DataError naming it: nothing is silently skipped.

A record is one detection::

    {"file_name": "sub/img.jpg", "bbox": [x, y, w, h], "score": 0.91,
     "category_id": 2, "category_name": "triangle"}

``bbox`` is COCO's (left, top, width, height) in original-image pixels; ``category_id`` is the
model's label in [0, K) -- its index into the class list, not the id of some annotation file
(``det test`` writes dataset ids, because it has the dataset) -- and ``category_name`` the
class's name. ``file_name`` is the image's path relative to the folder all inputs share.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from detcli.errors import DataError
from detcli.structures.detections import Detections
from detcli.tools.draw import draw_boxes, save_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
PREDICTIONS_FILE = "predictions.json"
_GLOB_CHARS = set("*?[")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def expand_input(text: str) -> list[Path]:
    """The image files one INPUT names (module docstring)."""
    path = Path(text)
    if path.is_dir():
        found = [p for p in path.rglob("*") if is_image_file(p)]
        if not found:
            raise DataError(f"folder {text} has no image files ({', '.join(IMAGE_SUFFIXES)})")
        return found
    if path.is_file():
        return [path]
    if _GLOB_CHARS & set(text):
        found = [Path(p) for p in glob.glob(text, recursive=True) if is_image_file(Path(p))]
        if not found:
            raise DataError(f"no image file matches {text!r}")
        return found
    raise DataError(f"input {text} does not exist (not a file, a folder or a glob pattern)")


def collect_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Every image file the INPUTs name, sorted, each once (module docstring)."""
    if not inputs:
        raise DataError("no INPUT given: name image files, folders or glob patterns")
    unique = {p.resolve(): p for text in inputs for p in expand_input(os.fspath(text))}
    return [unique[key] for key in sorted(unique)]


def relative_names(paths: Sequence[Path]) -> list[Path]:
    """Each path relative to the folder all of them share (``a/x.jpg``, ``b/x.jpg`` stay
    apart), for naming output files after their inputs."""
    if not paths:
        return []
    resolved = [p.resolve() for p in paths]
    root = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    return [p.relative_to(root) for p in resolved]


# ---- outputs -----------------------------------------------------------------------------

def prediction_records(file_name: str, dets: Detections, classes: Sequence[str]
                       ) -> list[dict[str, Any]]:
    """One record per detection (module docstring), in score order."""
    boxes = dets.boxes.float().cpu()  # (D, 4) x1, y1, x2, y2
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)  # (D, 4) x, y, w, h
    records = []
    for box, score, label in zip(xywh.tolist(), dets.scores.tolist(), dets.labels.tolist()):
        records.append({"file_name": file_name, "bbox": [round(v, 2) for v in box],
                        "score": round(float(score), 5), "category_id": int(label),
                        "category_name": classes[label] if 0 <= label < len(classes)
                        else f"class_{label}"})
    return records


def draw_detections(image: np.ndarray, dets: Detections, classes: Sequence[str]) -> np.ndarray:
    """A copy of the BGR image (H, W, 3) with every detection's box, class name and score."""
    return draw_boxes(image, dets.boxes.float().cpu().numpy(), dets.labels.cpu().numpy(), classes,
                      dets.scores.float().cpu().numpy())


def save_drawing(out_dir: Path, name: Path, image: np.ndarray, dets: Detections,
                 classes: Sequence[str]) -> Path:
    """Draw and write ``out_dir / name`` (its format from the suffix; PNG for unusual ones)."""
    target = out_dir / name
    if target.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp"):
        target = target.with_suffix(".png")
    return save_image(target, draw_detections(image, dets, classes))


def write_predictions(out_dir: Path, records: list[dict[str, Any]]) -> Path:
    """``out_dir / predictions.json``: the records as one JSON list."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PREDICTIONS_FILE
    path.write_text(json.dumps(records, indent=1) + "\n")
    return path
