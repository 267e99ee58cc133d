"""Pascal VOC datasets (``type = "VOCDataset"``): an image-set list and a folder of XML files.

I images, A objects. ``ann_file`` is an ``ImageSets/Main/<split>.txt`` list of image ids (the
first word of each line); ``img_prefix`` is the year folder holding ``Annotations/<id>.xml``
and ``JPEGImages/<id>.jpg``. Labels follow ``classes`` (the 20 VOC classes by default);
``difficult`` objects become ignore boxes; objects of other names are skipped with a count
logged, with a did-you-mean when a name is close to a class. Coordinates are taken as written
(MMDetection 2.x: no -1 offset). The image size comes from ``<size>``, or from the image file
header when the XML has none. VOC XML has no instance masks: a pipeline that loads them
(``LoadAnnotations(with_mask=True)``) stops with a DataError naming the dataset.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

from detcli.data.datasets.base import DatasetBaseConfig, DetDataset, LoadedAnnotations
from detcli.data.image_file import image_size
from detcli.data.paths import lookup_note
from detcli.data.problems import BAD_ANNOTATION, MISSING_FILE, DataProblem
from detcli.errors import DataError
from detcli.registry import DATASETS, suggest

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
_COORDS = ("xmin", "ymin", "xmax", "ymax")


class VOCDatasetConfig(DatasetBaseConfig):
    type: Literal["VOCDataset"] = "VOCDataset"


class _BadXML(Exception):
    """An XML file that cannot be read as a VOC annotation; becomes a DataProblem."""


def _number(node: ET.Element | None, tag: str) -> float:
    text = node.findtext(tag) if node is not None else None
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _BadXML(f"<{tag}> is {text!r}, not a number") from None


def _read_xml(xml_path: Path, img_path: Path) -> tuple[int, int, list[tuple[str, bool, list[float]]]]:
    """(width, height, objects) of one annotation file; objects are (name, difficult, box)."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise _BadXML(f"not valid XML: {exc}") from None
    size = root.find("size")
    width = int(_number(size, "width")) if size is not None else 0
    height = int(_number(size, "height")) if size is not None else 0
    if width <= 0 or height <= 0:  # some VOC-style exports write 0: ask the image
        width, height = image_size(img_path)
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise _BadXML(f"object {len(objects)} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise _BadXML(f"object {len(objects)} ({name}) has no <bndbox>")
        difficult = (obj.findtext("difficult") or "0").strip() not in ("0", "")
        objects.append((name, difficult, [_number(bndbox, c) for c in _COORDS]))
    return width, height, objects


@DATASETS.register(VOCDatasetConfig)
class VOCDataset(DetDataset):
    """Pascal VOC layout: ``img_prefix/Annotations/<id>.xml``, ``img_prefix/JPEGImages/<id>.jpg``."""

    CLASSES = VOC_CLASSES

    def _image_ids(self) -> list[str]:
        path = Path(self.ann_file)
        if not path.is_file():
            raise DataError(f"image-set file {path} does not exist{lookup_note(path)}",
                            hint="VOC's ann_file is e.g. VOC2007/ImageSets/Main/trainval.txt")
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        if not ids:
            raise DataError(f"image-set file {path} is empty")
        return ids

    def load_annotations(self) -> LoadedAnnotations:
        classes = self.requested_classes or VOC_CLASSES
        label_of = {name: k for k, name in enumerate(classes)}
        prefix = Path(self.img_prefix)
        img_infos, ann_paths, problems = [], [], []
        boxes, labels, ignore, image_index, ann_ids = [], [], [], [], []
        unknown: Counter[str] = Counter()
        for k, image_id in enumerate(self._image_ids()):
            xml_path = prefix / "Annotations" / f"{image_id}.xml"
            file_name = f"JPEGImages/{image_id}.jpg"
            try:
                width, height, objects = _read_xml(xml_path, prefix / file_name)
            except (FileNotFoundError, DataError, _BadXML) as exc:
                kind = MISSING_FILE if isinstance(exc, FileNotFoundError) else BAD_ANNOTATION
                message = "annotation file does not exist" if kind == MISSING_FILE else str(exc)
                problems.append(DataProblem(kind, str(xml_path), message, image=file_name, image_index=k))
                width, height, objects = 1, 1, []
            img_infos.append({"id": k, "file_name": file_name, "filename": str(prefix / file_name),
                              "height": height, "width": width})
            ann_paths.append(str(xml_path))
            for j, (name, difficult, box) in enumerate(objects):
                if name not in label_of:
                    unknown[name] += 1
                boxes.append(box)
                labels.append(label_of.get(name, -1))
                ignore.append(difficult)
                image_index.append(k)
                ann_ids.append(j)
        self._log_unknown(unknown, classes)
        source = "the `classes` setting" if self.requested_classes else "the 20 VOC classes"
        return LoadedAnnotations(
            img_infos=img_infos,
            boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),  # (A, 4)
            labels=np.array(labels, dtype=np.int64), image_index=np.array(image_index, dtype=np.int64),
            ignore=np.array(ignore, dtype=bool), ann_ids=np.array(ann_ids, dtype=np.int64),
            classes=tuple(classes), classes_source=source, ann_id_name="object",
            ann_paths=ann_paths, problems=problems,
            masks_note="VOC XML annotations hold boxes only (LoadAnnotations with_mask = true "
                       "needs a COCO file with `segmentation` or YOLO polygon labels)",
        )

    def _log_unknown(self, unknown: Counter[str], classes: tuple[str, ...]) -> None:
        """Objects whose name is not a class are skipped; say so, and flag likely typos."""
        for name, count in unknown.most_common():
            hint = suggest(name, list(classes))
            if hint:
                log.warning("%s: %d objects named %r are skipped: not in `classes` "
                            "(did you mean %r?)", self.source, count, name, hint)
            else:
                log.info("%s: %d objects named %r are skipped: not in `classes`",
                         self.source, count, name)
