"""YOLO txt datasets (``type = "YOLODataset"``): one label file per image, a names list.

I images, A boxes. Each label line is ``class cx cy w h`` with the centre and size normalised
to [0, 1] by the image's width and height (a longer line ``class x1 y1 x2 y2 ...`` is a polygon
and becomes its bounding box, as Ultralytics does; the polygon, in pixels, is the object's
instance mask for ``LoadAnnotations(with_mask=True)``, and a box line under such a pipeline is
a DataError naming its file and line). Boxes become (x1, y1, x2, y2) pixels with
the image size read from the file header (see :mod:`detcli.data.image_file`), after EXIF
orientation. Labels are the class numbers, ``classes[k]`` naming class ``k``.

Images are ``img_prefix`` searched recursively (sorted), or the paths listed in ``ann_file``
(one a line, relative to ``img_prefix``). Labels sit where Ultralytics puts them: the image
path with its last ``images`` folder replaced by ``labels`` and the suffix by ``.txt``, unless
``label_prefix`` names the folder that mirrors ``img_prefix``. A missing label file means an
image without objects (Ultralytics' convention); the count is logged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from detcli.config.schema import Maybe
from detcli.data.datasets.base import DatasetBaseConfig, DetDataset, LoadedAnnotations, OnBad
from detcli.data.transforms.compose import TransformSpec
from detcli.data.image_file import image_size
from detcli.data.masks_io import NoMasks
from detcli.data.paths import lookup_note
from detcli.data.problems import BAD_ANNOTATION, MISSING_FILE, UNREADABLE_IMAGE, DataProblem
from detcli.errors import DataError
from detcli.registry import DATASETS

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class YOLODatasetConfig(DatasetBaseConfig):
    type: Literal["YOLODataset"] = "YOLODataset"
    ann_file: Maybe[str] = None  # optional list of images; default: every image under img_prefix
    classes: list[str] = Field(min_length=1)  # the names list: classes[k] names class k
    label_prefix: Maybe[str] = None  # default: img_prefix with `images` replaced by `labels`


def _parse_line(line: str) -> tuple[int, list[float], list[float] | None] | str:
    """(class, [cx, cy, w, h] normalised, polygon [x0, y0, ...] normalised or None) of one label
    line, or why it is malformed."""
    words = line.split()
    try:
        values = [float(w) for w in words]
    except ValueError:
        return f"{line.strip()!r} is not numbers"
    polygon = None
    if len(values) == 5:
        cls, box = values[0], values[1:]
    elif len(values) >= 7 and len(values) % 2 == 1:  # a polygon: its bounding box
        xs, ys = values[1::2], values[2::2]
        cls, polygon = values[0], values[1:]
        box = [(min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
    else:
        return f"has {len(values)} values; expected `class cx cy w h` (5) or a polygon"
    if cls != int(cls):
        return f"class {cls:g} is not an integer"
    return int(cls), box, polygon


BOX_LINE = NoMasks("is a box line (class cx cy w h), not a polygon: it has no instance mask")


@DATASETS.register(YOLODatasetConfig)
class YOLODataset(DetDataset):
    """Images under ``img_prefix``, labels in the Ultralytics ``labels/`` mirror."""

    def __init__(
        self,
        *,
        img_prefix: str,
        classes: Sequence[str],
        ann_file: str | None = None,
        label_prefix: str | None = None,
        pipeline: Sequence[TransformSpec] = (),
        filter_empty_gt: bool = True,
        min_size: int = 0,
        test_mode: bool = False,
        on_bad: OnBad = "stop",
    ) -> None:
        if not classes:
            raise DataError(f"YOLODataset {img_prefix}: `classes` must list the class names")
        self.label_prefix = label_prefix
        super().__init__(ann_file=ann_file, img_prefix=img_prefix, pipeline=pipeline, classes=classes,
                         filter_empty_gt=filter_empty_gt, min_size=min_size, test_mode=test_mode,
                         on_bad=on_bad)

    def _images(self) -> list[Path]:
        prefix = Path(self.img_prefix)
        if not prefix.is_dir():
            raise DataError(f"image folder {prefix} does not exist{lookup_note(prefix)}")
        if self.ann_file is None:
            images = sorted(p for p in prefix.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            listing = Path(self.ann_file)
            if not listing.is_file():
                raise DataError(f"image list {listing} does not exist{lookup_note(listing)}")
            images = [prefix / line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not images:
            raise DataError(f"no images in {self.ann_file or prefix} "
                            f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
        return images

    def _label_path(self, image: Path) -> Path:
        if self.label_prefix is not None:
            return Path(self.label_prefix) / image.relative_to(self.img_prefix).with_suffix(".txt")
        parts = image.parts
        if "images" not in parts[:-1]:
            raise DataError(f"cannot find the labels of {image}: its path has no `images` folder "
                            "to swap for `labels`", hint="set label_prefix to the labels folder")
        k = len(parts) - 2 - parts[-2::-1].index("images")  # the last `images` folder
        return Path(*parts[:k], "labels", *parts[k + 1:]).with_suffix(".txt")

    def _read_labels(self, label_path: Path, k: int, file_name: str,
                     problems: list[DataProblem]
                     ) -> list[tuple[int, int, list[float], list[float] | None]]:
        """(line number, class, box, polygon or None) of each well-formed line; problems for
        the others."""
        rows = []
        for n, line in enumerate(label_path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parsed = _parse_line(line)
            if isinstance(parsed, tuple) and not 0 <= parsed[0] < len(self.requested_classes):
                parsed = (f"class {parsed[0]} is not one of the {len(self.requested_classes)} "
                          f"classes (0 to {len(self.requested_classes) - 1})")
            if isinstance(parsed, str):
                problems.append(DataProblem(BAD_ANNOTATION, str(label_path), parsed,
                                            ann_id=f"line {n}", image=file_name, image_index=k))
            else:
                rows.append((n, *parsed))
        return rows

    def load_annotations(self) -> LoadedAnnotations:
        prefix = Path(self.img_prefix)
        img_infos: list[dict[str, Any]] = []
        ann_paths, problems, rows = [], [], []
        without_labels = 0
        for k, image in enumerate(self._images()):
            label_path = self._label_path(image)
            file_name = image.relative_to(prefix).as_posix() if image.is_relative_to(prefix) else str(image)
            try:
                width, height = image_size(image)
            except DataError as exc:
                kind = MISSING_FILE if not image.exists() else UNREADABLE_IMAGE
                problems.append(DataProblem(kind, str(image), str(exc), image=file_name, image_index=k))
                width, height = 1, 1
            img_infos.append({"id": k, "file_name": file_name, "filename": str(image),
                              "height": height, "width": width})
            ann_paths.append(str(label_path))
            if not label_path.is_file():
                without_labels += 1
                continue
            rows += [(k, n, cls, box, _pixels(polygon, width, height)) for n, cls, box, polygon in
                     self._read_labels(label_path, k, file_name, problems)]
        if without_labels:
            log.info("%s: %d images have no label file and count as background", self.source,
                     without_labels)
        image_index = np.array([r[0] for r in rows], dtype=np.int64)  # (A,)
        cxcywh = np.array([r[3] for r in rows], dtype=np.float64).reshape(-1, 4)  # (A, 4) normalised
        sizes = np.array([[i["width"], i["height"]] for i in img_infos], dtype=np.float64)  # (I, 2)
        scale = np.tile(sizes[image_index], 2)  # (A, 4): w, h, w, h
        half = cxcywh[:, 2:] / 2
        boxes = np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1) * scale  # (A, 4)
        return LoadedAnnotations(
            img_infos=img_infos, boxes=boxes.astype(np.float32), image_index=image_index,
            labels=np.array([r[2] for r in rows], dtype=np.int64),
            ignore=np.zeros(len(rows), dtype=bool), ann_ids=np.array([r[1] for r in rows], dtype=np.int64),
            classes=tuple(self.requested_classes), classes_source="the `classes` names list",
            ann_id_name="line", ann_paths=ann_paths, problems=problems,
            masks=[BOX_LINE if r[4] is None else r[4] for r in rows],
        )


def _pixels(polygon: list[float] | None, width: int, height: int) -> list[list[float]] | None:
    """A normalised polygon [x0, y0, ...] as a COCO polygon segmentation in pixels."""
    if polygon is None:
        return None
    xy = np.asarray(polygon, dtype=np.float64).reshape(-1, 2) * np.array([width, height])
    return [xy.reshape(-1).tolist()]
