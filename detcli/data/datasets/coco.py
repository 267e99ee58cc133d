"""COCO-format detection datasets (``type = "CocoDataset"``), read through pycocotools.

I images, A annotations, C categories in the file, K classes used.

Labels: without ``classes``, every category of the file is a class and label ``k`` is the
category with the k-th smallest id (ids 1, 3, 7 become labels 0, 1, 2). With ``classes``, label
``k`` is the category named ``classes[k]``; annotations of other categories are skipped with a
count logged. ``iscrowd`` boxes become ignore boxes. ``bbox = [x, y, w, h]`` becomes
``[x, y, x + w, y + h]`` (MMDetection 2.x, no -1).

Bad input raises :class:`~detcli.errors.DataError` naming the file and annotation id: a missing
or empty file, JSON that is not COCO, duplicate ids, an annotation pointing at an unknown image
or category, and (through the base class) NaN coordinates, non-positive width or height and
boxes outside their image. Boxes under 1 pixel and ``area <= 0`` are dropped with a count, as
MMDetection does.

Each annotation's ``segmentation`` (polygons, or RLE with ``counts`` a list or a string) is kept
as written for ``LoadAnnotations(with_mask=True)`` (:mod:`detcli.data.masks_io`); crowd
annotations' masks are not used (their boxes are ignore boxes). ``det data check`` reports
segmentations that are degenerate, self-intersecting, of the wrong size or far from their box.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools.coco import COCO

from detcli.data.datasets.base import DatasetBaseConfig, DetDataset, LoadedAnnotations
from detcli.data.datasets.coco_json import (
    CocoArrays,
    annotation_arrays,
    category_table,
    image_table,
    read_coco_json,
)
from detcli.data.problems import UNKNOWN_CATEGORY, UNKNOWN_IMAGE, DataProblem
from detcli.errors import DataError
from detcli.registry import DATASETS, suggest


class CocoDatasetConfig(DatasetBaseConfig):
    type: Literal["CocoDataset"] = "CocoDataset"


def select_classes(
    cat_ids: np.ndarray, cat_names: list[str], classes: tuple[str, ...] | None, path: Path
) -> tuple[dict[int, int], tuple[str, ...]]:
    """Category id -> label, and the class names in label order (see the module docstring)."""
    if classes is None:
        order = np.argsort(cat_ids, kind="stable")  # (C,) ascending category id
        return ({int(cat_ids[k]): label for label, k in enumerate(order)},
                tuple(cat_names[k] for k in order))
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DataError(f"`classes` names {', '.join(map(repr, repeated))} more than once")
    by_name: dict[str, list[int]] = {}
    for cid, name in zip(cat_ids.tolist(), cat_names):
        by_name.setdefault(name, []).append(cid)
    mapping: dict[int, int] = {}
    for label, name in enumerate(classes):
        if name not in by_name:
            hint = suggest(name, list(by_name))
            raise DataError(
                f"class {name!r} in `classes` is not a category of {path}; "
                f"the file has: {', '.join(cat_names)}"
                + (f". Did you mean {hint!r}?" if hint else ""))
        if len(by_name[name]) > 1:
            raise DataError(f"{path}: category name {name!r} belongs to several ids "
                            f"{by_name[name]}; `classes` cannot tell them apart")
        mapping[by_name[name][0]] = label
    return mapping, tuple(classes)


def _lookup(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Position of each of ``keys`` (n,) in ``table`` (m,), -1 where absent."""
    if len(table) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    order = np.argsort(table)  # (m,)
    pos = order[np.searchsorted(table, keys, sorter=order).clip(max=len(table) - 1)]  # (n,)
    return np.where(table[pos] == keys, pos, -1)


@DATASETS.register(CocoDatasetConfig)
class CocoDataset(DetDataset):
    """A COCO json file and a folder of images (``img_prefix`` + ``file_name``)."""

    def load_annotations(self) -> LoadedAnnotations:
        path = Path(self.ann_file)
        data = read_coco_json(path, need_annotations=not self.test_mode)
        image_ids, images = image_table(data, path)
        cat_ids, cat_names = category_table(data, path)
        anns = annotation_arrays(data, path)
        self.coco = _silent_coco(data)
        self.cat_ids, classes = _cat_ids_and_classes(cat_ids, cat_names, self.requested_classes, path)
        cat_label = np.full(len(cat_ids), -1, dtype=np.int64)  # (C,) -1: not selected
        cat_label[_lookup(np.array(self.cat_ids, dtype=np.int64), cat_ids)] = np.arange(len(classes))

        image_index = _lookup(anns.image_ids, image_ids)  # (A,) -1: unknown image
        cat_index = _lookup(anns.category_ids, cat_ids)  # (A,) -1: unknown category
        known_cat = cat_index >= 0
        problems = self._reference_problems(anns, image_index, known_cat, images)
        usable = (image_index >= 0) & known_cat  # (A,) the others are reported above
        labels = cat_label[cat_index[usable]]  # (A',)
        xywh = anns.bbox_xywh[usable]  # (A', 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # (A', 4) xyxy
        prefix = Path(self.img_prefix)
        img_infos = [
            {"id": int(img["id"]), "file_name": img["file_name"],
             "filename": str(prefix / img["file_name"]),
             "height": int(img["height"]), "width": int(img["width"])}
            for img in images
        ]
        source = "the `classes` setting" if self.requested_classes else f"the categories of {path}"
        return LoadedAnnotations(
            img_infos=img_infos, boxes=boxes, labels=labels, image_index=image_index[usable],
            ignore=anns.iscrowd[usable], ann_ids=anns.ids[usable], classes=classes,
            classes_source=source, area=anns.area[usable], problems=problems,
            masks=[anns.segmentation[j] for j in np.flatnonzero(usable)],
        )

    def _reference_problems(
        self, anns: CocoArrays, image_index: np.ndarray, known_cat: np.ndarray, images: list[dict]
    ) -> list[DataProblem]:
        """Annotations pointing at an image or category the file does not have."""
        problems = []
        for j in np.flatnonzero(image_index < 0):  # only the bad ones
            problems.append(DataProblem(
                UNKNOWN_IMAGE, self.ann_file, f"image_id {int(anns.image_ids[j])} is not in `images`",
                ann_id=f"annotation {int(anns.ids[j])}"))
        for j in np.flatnonzero(~known_cat & (image_index >= 0)):
            k = int(image_index[j])
            problems.append(DataProblem(
                UNKNOWN_CATEGORY, self.ann_file,
                f"category_id {int(anns.category_ids[j])} is not in `categories`",
                ann_id=f"annotation {int(anns.ids[j])}", image=images[k]["file_name"], image_index=k))
        return problems


def _cat_ids_and_classes(
    cat_ids: np.ndarray, cat_names: list[str], classes: tuple[str, ...] | None, path: Path
) -> tuple[list[int], tuple[str, ...]]:
    """Category ids in label order (``cat_ids[label]``), and the class names."""
    mapping, names = select_classes(cat_ids, cat_names, classes, path)
    by_label = sorted(mapping, key=mapping.__getitem__)
    return by_label, names


def _silent_coco(data: dict[str, Any]) -> COCO:
    """A pycocotools COCO index over already-loaded data, without its prints."""
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
