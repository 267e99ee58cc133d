"""The dataset base class: validated annotations in flat arrays, filtering, and the results dict.

I images in the annotation file, A annotations, G GT boxes and Ig ignore boxes of one image,
K classes. Boxes are (x1, y1, x2, y2) in absolute pixels of the original image, MMDetection's
convention (a COCO ``[x, y, w, h]`` box becomes ``[x, y, x + w, y + h]``, no -1). Labels are in
[0, K); ignore boxes (COCO ``iscrowd``, VOC ``difficult``) carry no label.

A format (COCO, VOC, YOLO) implements :meth:`DetDataset.load_annotations` and returns every
annotation it read as a :class:`LoadedAnnotations`; this class then does what every format
shares, in order:

1. find bad boxes (:func:`~detcli.data.problems.find_box_problems`) and, with
   ``on_bad="stop"``, raise one DataError listing the first few; with ``"skip"``, drop the
   images they belong to;
2. drop boxes under 1 pixel and boxes of classes not selected, with a count logged;
3. unless ``test_mode``, drop images without GT (``filter_empty_gt``) and images whose shorter
   side is under ``min_size``; the counts go to the log and to :attr:`DetDataset.filter_report`;
4. sort the kept annotations by image, so ``get_ann_info(i)`` is two array slices.

Instance masks: a format that reads them gives one COCO ``segmentation`` per annotation
(``LoadedAnnotations.masks``: polygons or RLE, None where an annotation has none);
:meth:`DetDataset.get_ann_masks` returns those of an image's GT boxes, and :meth:`prepare`
hands them to the pipeline as ``ann_info["masks"]`` (with ``ann_info["ann_ids"]`` and
``ann_info["source"]`` naming them in messages) for ``LoadAnnotations(with_mask=True)``. A
format without masks gives a :class:`~detcli.data.masks_io.NoMasks` saying so instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field
from torch.utils.data import Dataset

from detcli.config.schema import Maybe, Schema
from detcli.data.masks_io import NoMasks
from detcli.data.problems import (
    BoxFindings,
    DataProblem,
    box_findings_to_problems,
    find_box_problems,
    first_errors,
    plural,
)
from detcli.errors import DataError
from detcli.data.transforms.compose import Compose, TransformSpec
from detcli.data.transforms.mixing import MixSourceRef
from detcli.registry import TransformConfig

log = logging.getLogger(__name__)

OnBad = Literal["stop", "skip"]
MAX_REDRAWS = 10  # images tried when the pipeline rejects samples
MANY_BAD = "bad annotations or images"


class DatasetBaseConfig(Schema):
    """Settings every dataset format shares (MMDetection 2.x names)."""

    type: str
    ann_file: str
    img_prefix: str
    pipeline: list[TransformConfig] = Field(default_factory=list)
    classes: Maybe[list[str]] = None
    filter_empty_gt: bool = True
    min_size: int = Field(0, ge=0)
    test_mode: bool = False


@dataclass
class LoadedAnnotations:
    """Every annotation a format read, before validation. A annotations, I images."""

    img_infos: list[dict[str, Any]]  # I dicts: id, file_name, filename (full path), height, width
    boxes: np.ndarray  # (A, 4) float32, may hold NaN: validated by the base class
    labels: np.ndarray  # (A,) int64 in [0, K); -1 for a class not selected (dropped)
    image_index: np.ndarray  # (A,) int64 into img_infos
    ignore: np.ndarray  # (A,) bool: becomes an ignore box
    ann_ids: np.ndarray  # (A,) int64, shown as f"{ann_id_name} {id}" in messages
    classes: tuple[str, ...]
    classes_source: str  # where the class list came from, for error messages
    ann_id_name: str = "annotation"  # "annotation" (COCO), "object" (VOC), "line" (YOLO)
    area: np.ndarray | None = None  # (A,) float, the annotation's own area (COCO)
    ann_paths: list[str] | None = None  # I per-image annotation files (VOC xml, YOLO txt)
    problems: list[DataProblem] | None = None  # format-level problems found while reading
    # (A,) COCO segmentations (polygons / RLE; None: the annotation has none, NoMasks: why it
    # cannot have one); None: the format has no masks, ``masks_note`` says why
    masks: list[Any] | None = None
    masks_note: str | None = None


@dataclass
class MaskRecord:
    """One annotation's segmentation, for checks: its name, box and whether it is a crowd."""

    name: str  # "annotation 17", "line 3"
    box: np.ndarray  # (4,) float32 x1 y1 x2 y2, original-image pixels
    segmentation: Any  # COCO polygons / RLE as written; None where absent; NoMasks
    ignore: bool  # a crowd / difficult annotation (an ignore box)


@dataclass
class FilterReport:
    """How many images and boxes a dataset kept, and why it dropped the others."""

    num_images: int  # images in the annotation source
    kept: int
    dropped_bad: int = 0  # images with an annotation error, on_bad="skip"
    dropped_empty: int = 0  # images without GT, filter_empty_gt
    dropped_small: int = 0  # images whose shorter side is under min_size
    dropped_tiny_boxes: int = 0  # boxes under 1 pixel wide or high
    dropped_unselected_boxes: int = 0  # boxes of classes not in `classes`

    def __str__(self) -> str:
        parts = [f"kept {self.kept} of {self.num_images} images"]
        for count, why in ((self.dropped_bad, "with bad annotations (on_bad_image='skip')"),
                           (self.dropped_empty, "without GT (filter_empty_gt)"),
                           (self.dropped_small, "smaller than min_size")):
            if count:
                parts.append(f"dropped {count} {why}")
        return "; ".join(parts)


def _objects(items: list[Any]) -> np.ndarray:
    """(A,) object array of ``items`` (no numpy broadcasting of nested lists)."""
    out = np.empty(len(items), dtype=object)  # None-filled
    for k, item in enumerate(items):
        out[k] = item
    return out


def _box_image_sizes(loaded: LoadedAnnotations) -> np.ndarray:
    """(A, 2) float64: (width, height) of each annotation's image."""
    sizes = np.array([[i["width"], i["height"]] for i in loaded.img_infos], dtype=np.float64)
    return sizes.reshape(-1, 2)[loaded.image_index]  # (A, 2)


class DetDataset(Dataset):
    """A detection dataset: ``__getitem__(i)`` builds the results dict and runs the pipeline."""

    CLASSES: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        ann_file: str | None,
        img_prefix: str,
        pipeline: Sequence[TransformSpec] = (),
        classes: Sequence[str] | None = None,
        filter_empty_gt: bool = True,
        min_size: int = 0,
        test_mode: bool = False,
        on_bad: OnBad = "stop",
    ) -> None:
        if on_bad not in ("stop", "skip"):
            raise DataError(f"on_bad must be 'stop' or 'skip', not {on_bad!r}")
        self.ann_file = str(ann_file) if ann_file is not None else None
        self.img_prefix = str(img_prefix)
        self.pipeline = Compose(pipeline)
        self._stages: list[tuple[int, Compose]] = [(0, self.pipeline)]  # (first epoch, pipeline)
        self.requested_classes = tuple(classes) if classes is not None else None
        self.filter_empty_gt = filter_empty_gt
        self.min_size = min_size
        self.test_mode = test_mode
        self.on_bad = on_bad
        self.source = self.ann_file or self.img_prefix  # names the dataset in messages
        loaded = self.load_annotations()
        self.CLASSES = loaded.classes
        self.classes_source = loaded.classes_source
        findings = find_box_problems(loaded.boxes, _box_image_sizes(loaded), loaded.area)
        self.problems = self._validate(loaded, findings)
        self._index(loaded, findings)

    def load_annotations(self) -> LoadedAnnotations:
        raise NotImplementedError

    # -- validation and indexing ------------------------------------------------------------

    def _validate(self, loaded: LoadedAnnotations, findings: BoxFindings) -> list[DataProblem]:
        """Step 1: every problem, format-level and per box; raise on errors when stopping."""

        def describe(j: int) -> tuple[str, str | None, str | None, int | None]:
            k = int(loaded.image_index[j])
            file = loaded.ann_paths[k] if loaded.ann_paths else self.source
            ann_id = f"{loaded.ann_id_name} {loaded.ann_ids[j]}"
            return file, ann_id, loaded.img_infos[k]["file_name"], k

        problems = list(loaded.problems or [])
        problems += box_findings_to_problems(findings, loaded.boxes, _box_image_sizes(loaded), describe)
        num_errors = sum(p.severity == "error" for p in problems)
        if num_errors and self.on_bad == "stop":
            raise DataError(
                f"{self.source}: {plural(num_errors, 'bad annotation or image', MANY_BAD)}:\n"
                f"{first_errors(problems)}",
                hint="`det data check` lists them all; data.on_bad_image = \"skip\" drops those images",
            )
        if num_errors:
            first = next(p for p in problems if p.severity == "error")
            log.warning("%s: skipping the images of %s, first: %s", self.source,
                        plural(num_errors, "bad annotation or image", MANY_BAD),
                        first)
        return problems

    def _index(self, loaded: LoadedAnnotations, findings: BoxFindings) -> None:
        """Steps 2-4: drop boxes and images, then group the kept boxes by image."""
        num_images = len(loaded.img_infos)
        bad_image = np.zeros(num_images, dtype=bool)
        bad_image[[p.image_index for p in self.problems
                   if p.severity == "error" and p.image_index is not None]] = True
        unselected = loaded.labels < 0  # (A,)
        keep_box = ~findings.error & ~findings.tiny & ~unselected
        keep_box &= ~bad_image[loaded.image_index]
        has_gt = np.bincount(loaded.image_index[keep_box & ~loaded.ignore], minlength=num_images) > 0
        sizes = np.array([[i["width"], i["height"]] for i in loaded.img_infos]).reshape(-1, 2)
        small = sizes.min(axis=1) < self.min_size  # (I,)
        empty = ~has_gt & self.filter_empty_gt
        if self.test_mode:  # evaluation sees every image, as MMDetection
            empty[:] = False
            small[:] = False
        keep_image = ~bad_image & ~empty & ~small  # (I,)
        self.filter_report = FilterReport(
            num_images=num_images,
            kept=int(keep_image.sum()),
            dropped_bad=int(bad_image.sum()),
            dropped_empty=int((~bad_image & empty).sum()),
            dropped_small=int((~bad_image & ~empty & small).sum()),
            dropped_tiny_boxes=int(findings.tiny.sum()),
            dropped_unselected_boxes=int(unselected.sum()),
        )
        self._log_report()
        new_index = np.cumsum(keep_image) - 1  # (I,) old image index -> kept index
        keep_box &= keep_image[loaded.image_index]
        box_image = new_index[loaded.image_index[keep_box]]  # (A',)
        order = np.argsort(box_image, kind="stable")  # (A',) boxes grouped by kept image
        self._boxes = loaded.boxes[keep_box][order].astype(np.float32)  # (A', 4)
        self._labels = loaded.labels[keep_box][order].astype(np.int64)  # (A',)
        self._ignore = loaded.ignore[keep_box][order]  # (A',)
        self._ann_ids = loaded.ann_ids[keep_box][order]  # (A',)
        self._ann_id_name = loaded.ann_id_name
        self._masks = None if loaded.masks is None else _objects(loaded.masks)[keep_box][order]
        self._no_masks = NoMasks(
            f"{type(self).__name__} {self.source} has no instance masks"
            + (f": {loaded.masks_note}" if loaded.masks_note else ""))
        self._offsets = np.searchsorted(box_image[order], np.arange(keep_image.sum() + 1))
        self.img_infos = [info for info, keep in zip(loaded.img_infos, keep_image) if keep]
        self.ann_paths = ([p for p, keep in zip(loaded.ann_paths, keep_image) if keep]
                          if loaded.ann_paths else None)
        # MMDetection's aspect-ratio group: 1 where width > height.
        self.flag = np.array([i["width"] > i["height"] for i in self.img_infos], dtype=np.uint8)

    def _log_report(self) -> None:
        report = self.filter_report
        log.info("%s: %s", self.source, report)
        if report.dropped_tiny_boxes:
            log.info("%s: dropped %d boxes under 1 pixel wide or high",
                     self.source, report.dropped_tiny_boxes)
        if report.dropped_unselected_boxes:
            log.info("%s: skipped %d boxes of classes not in `classes`",
                     self.source, report.dropped_unselected_boxes)

    # -- access -----------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.CLASSES)

    def __len__(self) -> int:
        return len(self.img_infos)

    def get_ann_info(self, idx: int) -> dict[str, np.ndarray]:
        """GT of image ``idx``: bboxes (G, 4) float32, labels (G,) int64, bboxes_ignore (Ig, 4)."""
        start, end = self._offsets[idx], self._offsets[idx + 1]
        boxes, ignore = self._boxes[start:end], self._ignore[start:end]
        return {
            "bboxes": boxes[~ignore].reshape(-1, 4),  # (G, 4)
            "labels": self._labels[start:end][~ignore],  # (G,)
            "bboxes_ignore": boxes[ignore].reshape(-1, 4),  # (Ig, 4)
        }

    @property
    def has_masks(self) -> bool:
        """Whether the format reads instance masks (COCO; YOLO polygon labels)."""
        return self._masks is not None

    def get_ann_masks(self, idx: int) -> list[Any] | NoMasks:
        """The G COCO segmentations of ``get_ann_info(idx)["bboxes"]``, in the same order
        (None where an annotation has none), or a NoMasks for a format without masks."""
        if self._masks is None:
            return self._no_masks
        start, end = self._offsets[idx], self._offsets[idx + 1]
        return list(self._masks[start:end][~self._ignore[start:end]])

    def mask_records(self, idx: int) -> list[MaskRecord]:
        """Every kept annotation of image ``idx`` with its segmentation, ignore boxes included
        (``det data check`` reads them); empty for a format without masks."""
        if self._masks is None:
            return []
        start, end = self._offsets[idx], self._offsets[idx + 1]
        return [MaskRecord(f"{self._ann_id_name} {int(i)}", box, segm, bool(ign))
                for i, box, segm, ign in zip(self._ann_ids[start:end], self._boxes[start:end],
                                             self._masks[start:end], self._ignore[start:end])]

    def get_ann_names(self, idx: int) -> list[str]:
        """Names for messages ("annotation 17", "line 3") of ``get_ann_info(idx)["bboxes"]``."""
        start, end = self._offsets[idx], self._offsets[idx + 1]
        ids = self._ann_ids[start:end][~self._ignore[start:end]]
        return [f"{self._ann_id_name} {int(i)}" for i in ids]

    def ann_source(self, idx: int) -> str:
        """The annotation file of image ``idx`` (VOC's xml, YOLO's txt; else the dataset's)."""
        return self.ann_paths[idx] if self.ann_paths else self.source

    def get_ignore_labels(self, idx: int) -> np.ndarray:
        """(Ig,) int64: the class of each of ``get_ann_info(idx)["bboxes_ignore"]`` (evaluation
        turns ignore boxes into COCO crowd regions of their class)."""
        start, end = self._offsets[idx], self._offsets[idx + 1]
        return self._labels[start:end][self._ignore[start:end]]

    def num_gts_per_image(self) -> np.ndarray:
        """(I,) int64: GT boxes (not ignore boxes) of every image."""
        per_box_image = np.repeat(np.arange(len(self)), np.diff(self._offsets))  # (A',)
        return np.bincount(per_box_image[~self._ignore], minlength=len(self)).astype(np.int64)

    def num_gts_per_class(self) -> np.ndarray:
        """(K,) int64: GT boxes (not ignore boxes) of every class."""
        return np.bincount(self._labels[~self._ignore], minlength=self.num_classes).astype(np.int64)

    @property
    def num_ignore_boxes(self) -> int:
        return int(self._ignore.sum())

    def drop_images(self, indices: Sequence[int], problems: Sequence[DataProblem] = ()) -> None:
        """Leave images ``indices`` out, with their GT (an image file that cannot be decoded,
        ``on_bad="skip"`` in evaluation); ``problems`` say why and join :attr:`problems`, and
        :attr:`filter_report` counts them as dropped bad images."""
        drop = np.zeros(len(self), dtype=bool)  # (I,)
        drop[list(indices)] = True
        if not drop.any():
            return
        keep_box = np.repeat(~drop, np.diff(self._offsets))  # (A',)
        self._boxes, self._labels = self._boxes[keep_box], self._labels[keep_box]
        self._ignore, self._ann_ids = self._ignore[keep_box], self._ann_ids[keep_box]
        if self._masks is not None:
            self._masks = self._masks[keep_box]
        kept_counts = np.diff(self._offsets)[~drop]  # (I',)
        self._offsets = np.concatenate([[0], np.cumsum(kept_counts)]).astype(np.int64)
        self.img_infos = [info for info, gone in zip(self.img_infos, drop) if not gone]
        if self.ann_paths is not None:
            self.ann_paths = [p for p, gone in zip(self.ann_paths, drop) if not gone]
        self.flag = self.flag[~drop]
        self.filter_report.kept -= int(drop.sum())
        self.filter_report.dropped_bad += int(drop.sum())
        self.problems = [*self.problems, *problems]

    def get_cat_ids(self, idx: int) -> list[int]:
        """The labels present in image ``idx`` (class-balanced sampling uses it)."""
        return sorted(set(self.get_ann_info(idx)["labels"].tolist()))

    def pipeline_input(self, idx: int) -> dict[str, Any]:
        """The results dict of image ``idx`` that the pipeline starts from (``img_info``,
        ``ann_info`` with its masks, ``img_prefix``, ``image_id``); ``det viz dataset`` runs
        the config's pipeline on it too."""
        info = self.img_infos[idx]
        ann_info: dict[str, Any] = {**self.get_ann_info(idx), "masks": self.get_ann_masks(idx),
                                    "ann_ids": self.get_ann_names(idx),
                                    "source": self.ann_source(idx)}
        return {
            "img_info": dict(info),
            "ann_info": ann_info,
            "img_prefix": self.img_prefix,
            "image_id": info["id"],
            "bbox_fields": [],
            "mix_source": MixSourceRef(self),  # the images Mosaic / MixUp draw from
        }

    def switch_pipeline(self, from_epoch: int, pipeline: Sequence[TransformSpec]) -> None:
        """Samples of epoch ``from_epoch`` (0-based) and later go through ``pipeline``
        (``PipelineSwitchHook``); :meth:`set_epoch` chooses the pipeline of an epoch."""
        if from_epoch < 0:
            raise DataError(f"switch_pipeline: from_epoch must be >= 0, got {from_epoch}")
        stages = [s for s in self._stages if s[0] != from_epoch] + [(from_epoch, Compose(pipeline))]
        self._stages = sorted(stages, key=lambda s: s[0])

    def set_epoch(self, epoch: int) -> None:
        """Use the pipeline of ``epoch``: the last stage starting at or before it. The
        training loader calls it before each sample (in the process that loads it)."""
        self.pipeline = next(p for start, p in reversed(self._stages) if start <= epoch)

    def prepare(self, idx: int) -> dict[str, Any] | None:
        """The results dict of image ``idx`` after the pipeline; None if the pipeline rejects it."""
        return self.pipeline(self.pipeline_input(idx))

    def __getitem__(self, idx: int) -> dict[str, Any]:
        """Image ``idx`` through the pipeline. In training, a sample the pipeline rejects
        (RandomCrop that cut every box away) is replaced by a random image of the same
        aspect-ratio group, as MMDetection does; a DataError (unreadable image) propagates,
        and ``data.on_bad_image = "skip"`` is the loader's business."""
        for _ in range(MAX_REDRAWS):
            results = self.prepare(idx)
            if results is not None:
                return results
            if self.test_mode:
                break
            group = np.flatnonzero(self.flag == self.flag[idx])  # (n,)
            idx = int(group[np.random.randint(len(group))])
        raise DataError(f"{self.source}: the pipeline rejected {self.img_infos[idx]['filename']}"
                        + (f" and {MAX_REDRAWS - 1} other images" if not self.test_mode else ""),
                        hint="check RandomCrop's crop_size against the image and box sizes")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source!r}, {len(self)} images, "
                f"{self.num_classes} classes, test_mode={self.test_mode})")
