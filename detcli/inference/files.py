"""What ``det predict`` reads and writes: which image and video files the INPUTs name, what
each is called under ``--out``, and the COCO-style records and pictures of their detections.

D detections of one image, K classes.

An INPUT is an image or video file, a folder (its image and video files, sub-folders included)
or a glob pattern (``"data/*.jpg"``, ``"shots/**/*.mp4"``; quote it so the shell leaves it
alone). Folders and globs contribute files with an image or video suffix; a file named
explicitly is always taken (if it is not an image, reading it fails and ``det predict`` reports
it). Each file is taken once. A folder without images, a pattern without matches or a path that
does not exist is a DataError naming it: nothing is silently skipped.

Each file gets a **name**, its path under ``--out`` and its ``file_name`` in the records:

* one folder: the path inside it (``val/a.jpg`` -> ``a.jpg``, ``val/sub/b.jpg`` -> ``sub/b.jpg``);
* several folders: the same, under the folder's own name (``val/a.jpg`` -> ``val/a.jpg``,
  ``/data/test/a.jpg`` -> ``test/a.jpg``), however the folders were written (absolute or not);
* a file: its file name; a glob: the path below its fixed part (``shots/**/*.png`` ->
  ``day1/x.png``).

When two files would get the same name (``a/img.jpg`` and ``b/img.jpg``), every file is named by
its path relative to the folder all of them share instead, so nothing is overwritten.

A record is one detection::

    {"file_name": "sub/img.jpg", "bbox": [x, y, w, h], "score": 0.91,
     "category_id": 2, "category_name": "triangle"}

``bbox`` is COCO's (left, top, width, height) in original-image pixels; ``category_id`` is the
model's label in [0, K) -- its index into the class list, not the id of some annotation file
(``det test`` writes dataset ids, because it has the dataset) -- and ``category_name`` the
class's name. A video's records add ``"frame"``, the frame's index from 0. A mask detector's
records add ``"segmentation"``, the detection's mask over the original image as COCO compressed
RLE, ``{"size": [H, W], "counts": "..."}`` (as ``det test --out`` writes it; decode it with
``pycocotools.mask.decode``, with ``counts`` encoded to bytes, or
:meth:`detcli.structures.mask_rle.MaskRLE.from_coco`); pictures and annotated videos show the
masks filled in the class colour under the boxes.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from detcli.errors import DataError, writing
from detcli.structures.detections import Detections
from detcli.viz.draw import draw_detections, save_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
PREDICTIONS_FILE = "predictions.json"
_GLOB_CHARS = set("*?[")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def is_video_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def _is_input_file(path: Path) -> bool:
    return is_image_file(path) or is_video_file(path)


@dataclass(frozen=True)
class InputFile:
    """One file to predict on: where it is, and its name under ``--out`` (module docstring)."""

    path: Path
    name: Path

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES


def _glob_root(pattern: str) -> Path:
    """The fixed folder a glob pattern starts from (``shots/**/*.png`` -> ``shots``)."""
    fixed = []
    for part in Path(pattern).parts:
        if _GLOB_CHARS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def expand_input(text: str) -> tuple[Path, list[Path]]:
    """The folder an INPUT's names start from, and the image and video files it names."""
    path = Path(text)
    if path.is_dir():
        found = [p for p in path.rglob("*") if _is_input_file(p)]
        if not found:
            raise DataError(f"folder {text} has no image or video files "
                            f"({', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
        return path, found
    if path.is_file():
        return path.parent, [path]
    if _GLOB_CHARS & set(text):
        found = [Path(p) for p in glob.glob(text, recursive=True) if _is_input_file(Path(p))]
        if not found:
            raise DataError(f"no image or video file matches {text!r}")
        return _glob_root(text), found
    raise DataError(f"input {text} does not exist (not a file, a folder or a glob pattern)")


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[InputFile]:
    """Every file the INPUTs name, each once, with its name; sorted by name."""
    if not inputs:
        raise DataError("no INPUT given: name image or video files, folders or glob patterns")
    expanded = [expand_input(os.fspath(text)) for text in inputs]
    keep_folder_name = sum(Path(os.fspath(t)).is_dir() for t in inputs) > 1
    named: dict[Path, Path] = {}  # resolved path -> name
    for text, (root, files) in zip(inputs, expanded):
        folder = Path(os.fspath(text)).is_dir()
        base = root.resolve().parent if folder and keep_folder_name else root.resolve()
        for path in files:
            named.setdefault(path.resolve(), path.resolve().relative_to(base))
    if len(set(named.values())) < len(named):  # a clash: name by the shared folder instead
        root = Path(os.path.commonpath([str(p.parent) for p in named]))
        named = {p: p.relative_to(root) for p in named}
    return sorted((InputFile(path, name) for path, name in named.items()),
                  key=lambda f: f.name.as_posix())


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
    for record, rle in zip(records, dets.encoded_masks() or ()):
        record["segmentation"] = rle.to_coco()
    return records


def save_drawing(out_dir: Path, name: Path, image: np.ndarray, dets: Detections,
                 classes: Sequence[str]) -> Path:
    """Draw and write ``out_dir / name`` (its format from the suffix; PNG for unusual ones)."""
    target = out_dir / name
    if target.suffix.lower() not in (".jpg", ".jpeg", ".png", ".bmp"):
        target = target.with_suffix(".png")
    return save_image(target, draw_detections(image, dets, classes))


def write_predictions(out_dir: Path, records: list[dict[str, Any]]) -> Path:
    """``out_dir / predictions.json``: the records as one JSON list."""
    path = out_dir / PREDICTIONS_FILE
    with writing(path, "predictions"):
        out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1) + "\n")
    return path
