"""What ``det viz assign`` shows: the configured assigner and sampler on one image's GT boxes.

H, W: the network input (padding included); R priors over all L levels; G GT boxes; I ignore
boxes; K classes. GT boxes come in original-image pixels (``--box`` or a COCO file) and are
moved into network-input pixels by the config's own pipeline
(:mod:`detcli.analysis.pipeline_view`); everything in :class:`AssignmentView` is in network-input
pixels. ``gt_index`` codes are :mod:`detcli.task.assigners.assign_result`'s: ``>= 0`` the
matched GT, -1 negative, -2 ignored.

The steps of :func:`visualize_assignment`:

1. build the prior generator, assigner and sampler from the config
   (:class:`~detcli.analysis.assignment.AssignmentParts`: a two-stage detector's are its RPN's,
   ``model.rpn_head`` and ``model.train_cfg.rpn``);
2. the GT of the image (:class:`OriginalGT`): the ``--box`` options (parsed by
   :mod:`detcli.cli.viz`) or the COCO file's entry for the image's file name
   (:func:`annotation_gt`);
3. run the test pipeline (or the training pipeline, seeded) on the image and its boxes;
4. an assigner whose class says ``needs_predictions = True`` (RTMDet's) ranks the points by
   the model's predictions: a trained model's outputs on the prepared image (the caller's
   ``predictions``, ``det viz assign --checkpoint``) or, without one, the documented stand-in
   of :mod:`detcli.analysis.stand_in` (seeded);
5. run :func:`~detcli.analysis.assignment.assign_image` and gather per-GT statistics;
6. what the assigner can explain besides its codes
   (:func:`~detcli.analysis.assign_explain.explain`): the FCOS rule's regions, ATSS's
   candidates, the dynamic soft-label assigner's cost terms and dynamic k.

A two-stage detector's second stage, the RoI head's sampling of proposals, is
:mod:`detcli.analysis.roi_sampling`'s, on the same prepared image and GT.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from detcli.analysis import capabilities as can
from detcli.analysis.assign_explain import Explanation, explain
from detcli.analysis.assignment import (
    AssignmentParts,
    ImageAssignment,
    assign_image,
    stand_in_outputs,
)
from detcli.analysis.pipeline_view import PipelineView, run_pipeline
from detcli.analysis.soft_label_explain import Predictions
from detcli.analysis.stand_in import STAND_IN_TEXT
from detcli.data.datasets.coco import select_classes
from detcli.data.datasets.coco_json import (
    annotation_arrays,
    category_table,
    image_table,
    read_coco_json,
)
from detcli.errors import ConfigError, DataError
from detcli.registry import DATASETS
from detcli.task.assigners.assign_result import IGNORED, NEGATIVE

log = logging.getLogger(__name__)

# a trained model's outputs on the prepared image (step 4; det viz assign --checkpoint)
PredictionSource = Callable[[PipelineView], Predictions]

@dataclass
class OriginalGT:
    """GT of one image in original-image pixels, as given on the command line (``det viz
    assign --box``, parsed by :mod:`detcli.cli.viz`) or in a file (:func:`annotation_gt`)."""

    boxes: np.ndarray  # (G, 4) float32
    labels: np.ndarray  # (G,) int64 in [0, K)
    ignore_boxes: np.ndarray  # (I, 4) float32
    class_names: tuple[str, ...]
    source: str  # "--box" or the annotation file
    segmentations: Optional[list[Any]] = None  # G COCO segmentations (a file's); None: no masks

    @classmethod
    def from_boxes(cls, boxes: Sequence[Sequence[float]], labels: Sequence[int],
                   class_names: Sequence[str], source: str = "--box") -> OriginalGT:
        """G boxes (x1, y1, x2, y2) with their labels in [0, K), no ignore boxes."""
        return cls(np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64).reshape(-1),
                   np.zeros((0, 4), np.float32), tuple(class_names), source)


@dataclass
class GTStats:
    """One GT box's row of the table."""

    index: int
    label: int
    class_name: str
    box: list[float]  # network-input pixels
    width: float
    height: float
    best_iou: float
    best_level: int
    num_pos: int
    num_pos_per_level: list[int]  # L
    low_quality_only: bool
    iou_threshold: Optional[float] = None  # ATSS: mean + std of its candidates' IoUs

    def to_dict(self) -> dict[str, Any]:
        out = {"index": self.index, "label": self.label, "class": self.class_name,
               "box": [round(v, 2) for v in self.box], "width": round(self.width, 2),
               "height": round(self.height, 2), "best_iou": round(self.best_iou, 4),
               "best_level": self.best_level, "num_pos": self.num_pos,
               "num_pos_per_level": self.num_pos_per_level,
               "low_quality_only": self.low_quality_only, "zero_positives": self.num_pos == 0}
        if self.iou_threshold is not None:
            out["iou_threshold"] = round(self.iou_threshold, 4)
        return out


@dataclass
class AssignmentView:
    """Everything the picture and the table show, as numpy arrays in network-input pixels."""

    image: np.ndarray  # (H, W, 3) uint8 BGR, de-normalised
    filename: str
    img_shape: tuple[int, int]  # (h, w) before padding
    pad_shape: tuple[int, int]  # (H, W)
    scale_factor: list[float]  # (sx, sy, sx, sy): original -> network input
    flip: bool
    priors: np.ndarray  # (R, 4)
    level: np.ndarray  # (R,) int64
    gt_index: np.ndarray  # (R,) int64 codes
    sampled_pos: np.ndarray  # (R,) bool
    sampled_neg: np.ndarray  # (R,) bool
    gt_boxes: np.ndarray  # (G, 4)
    gt_labels: np.ndarray  # (G,)
    ignore_boxes: np.ndarray  # (I, 4)
    strides: list[int]  # per level (the x stride)
    class_names: tuple[str, ...]
    gts: list[GTStats]
    assigner: str
    sampler: str
    assignment: ImageAssignment = field(repr=False)
    explained: Explanation = field(default_factory=Explanation, repr=False)
    ori_shape: tuple[int, int] = (0, 0)  # (h0, w0) of the file as read
    head_key: str = "model.bbox_head"  # whose anchors: model.rpn_head in a two-stage detector
    gt_masks: Optional[np.ndarray] = None  # (G, H, W) bool, network input; None: no masks

    @property
    def ignored(self) -> np.ndarray:
        return self.gt_index == IGNORED  # (R,)

    @property
    def counts(self) -> dict[str, int]:
        return {"positive": int((self.gt_index >= 0).sum()),
                "negative": int(self.sampled_neg.sum()),
                "ignored": int(self.ignored.sum()),
                "assigned_negative": int((self.gt_index == NEGATIVE).sum()),
                "sampled_positive": int(self.sampled_pos.sum())}

    def per_level(self) -> list[dict[str, int]]:
        """Per level: priors, positives, ignored and sampled negatives."""
        rows = []
        for lvl, stride in enumerate(self.strides):
            on = self.level == lvl  # (R,)
            rows.append({"level": lvl, "stride": stride, "priors": int(on.sum()),
                         "positive": int((on & (self.gt_index >= 0)).sum()),
                         "ignored": int((on & self.ignored).sum()),
                         "negative": int((on & self.sampled_neg).sum())})
        return rows

    @property
    def zero_positive(self) -> list[int]:
        return [gt.index for gt in self.gts if gt.num_pos == 0]

    def to_dict(self) -> dict[str, Any]:
        out = {"image": self.filename, "input_shape": list(self.pad_shape),
               "img_shape": list(self.img_shape), "scale_factor": self.scale_factor,
               "flip": self.flip, "assigner": self.assigner, "sampler": self.sampler,
               "counts": self.counts, "levels": self.per_level(),
               "gts": [gt.to_dict() for gt in self.gts], "zero_positive_gts": self.zero_positive}
        if self.head_key != "model.bbox_head":  # a two-stage detector: the RPN's anchors
            out["anchors_of"] = self.head_key
        if self.explained.regions is not None:
            out["regress_ranges"] = [list(r) for r in self.explained.regions["regress_ranges"]]
        if self.explained.costs is not None:
            out["soft_label"] = self.explained.costs.to_dict()
        return out


# -- GT input ---------------------------------------------------------------------------------

def find_image_record(images: list[dict[str, Any]], image_path: Path, ann_file: Path) -> dict[str, Any]:
    """The COCO image record of ``image_path``: same base name, and when several share it, the
    one whose ``file_name`` is a suffix of the path. DataError listing close names otherwise."""
    name = image_path.name
    same = [im for im in images if Path(str(im["file_name"])).name == name]
    if len(same) > 1:
        posix = image_path.as_posix()
        same = [im for im in same if posix.endswith(Path(str(im["file_name"])).as_posix())] or same
    if len(same) == 1:
        return same[0]
    if len(same) > 1:
        listed = ", ".join(str(im["file_name"]) for im in same[:5])
        raise DataError(f"{ann_file}: {len(same)} images are named {name!r} ({listed}); "
                        "pass the image by a path that ends with one of them")
    names = [Path(str(im["file_name"])).name for im in images]
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    listing = (f"close names: {', '.join(close)}" if close else
               f"it has {len(names)} images, e.g. {', '.join(names[:5])}")
    raise DataError(f"{ann_file} has no image named {name!r}; {listing}",
                    hint="images are matched by file name")


def coco_gt_for_image(ann_file: Path, image_path: Path,
                      classes: Optional[Sequence[str]] = None) -> OriginalGT:
    """The GT of ``image_path`` in the COCO file ``ann_file``: labels as CocoDataset makes them
    (``classes`` selects and orders categories), crowd boxes as ignore boxes."""
    data = read_coco_json(ann_file)
    image_ids, images = image_table(data, ann_file)
    record = find_image_record(images, image_path, ann_file)
    cat_ids, cat_names = category_table(data, ann_file)
    mapping, names = select_classes(cat_ids, cat_names, tuple(classes) if classes else None, ann_file)
    anns = annotation_arrays(data, ann_file)
    mine = anns.image_ids == int(record["id"])  # (A,)
    labels = np.array([mapping.get(int(c), -1) for c in anns.category_ids[mine]], np.int64)  # (A',)
    xywh = anns.bbox_xywh[mine]  # (A', 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    usable = (labels >= 0) & (xywh[:, 2] >= 1) & (xywh[:, 3] >= 1)  # as the dataset filters
    crowd = anns.iscrowd[mine]
    log.debug("%s: image %s (id %s) has %d boxes, %d crowd", ann_file, record["file_name"],
             record["id"], int((usable & ~crowd).sum()), int((usable & crowd).sum()))
    keep = usable & ~crowd
    segms = [anns.segmentation[k] for k in np.flatnonzero(mine)[keep]]  # (G,) or None each
    segmentations = segms if all(s is not None for s in segms) else None
    return OriginalGT(boxes[keep], labels[keep], boxes[usable & crowd], names, str(ann_file),
                      segmentations)


def annotation_gt(cfg: Any, ann_file: str | Path, image_path: str | Path) -> OriginalGT:
    """The GT of ``image_path`` in the COCO file ``ann_file``, labelled as training would
    label it (the classes of the config's ``data.train``)."""
    classes = getattr(cfg.data.train, "classes", None)
    return coco_gt_for_image(Path(ann_file), Path(image_path), classes)


def config_class_names(cfg: Any) -> tuple[str, ...]:
    """Class names of the config's dataset (test, then val, then train): its ``classes``, or a
    COCO file's categories; () when neither can be read."""
    for split in ("test", "val", "train"):
        ds = cfg.data.split(split)
        if ds is None:
            continue
        if getattr(ds, "classes", None):
            return tuple(ds.classes)
        ann_file = Path(getattr(ds, "ann_file", "") or "")
        if ds.type == "CocoDataset" and ann_file.is_file():
            try:
                data = read_coco_json(ann_file, need_annotations=False)
                ids, names = category_table(data, ann_file)
                return select_classes(ids, names, None, ann_file)[1]
            except DataError as exc:
                log.debug("no class names from %s: %s", ann_file, exc)
        known = getattr(DATASETS.get(ds.type), "CLASSES", ())
        if known:
            return tuple(known)
    return ()


# -- the assignment ---------------------------------------------------------------------------

def pipeline_of(cfg: Any, train_pipeline: bool) -> list[Any]:
    """The training pipeline, or the test one (val's when there is no test dataset)."""
    splits = ("train",) if train_pipeline else ("test", "val")
    for split in splits:
        ds = cfg.data.split(split)
        if ds is not None and ds.pipeline:
            return list(ds.pipeline)
    raise ConfigError(f"the config has no data.{' or data.'.join(splits)} pipeline to prepare "
                      "the image with")


def _check_inside(gt: OriginalGT, ori_shape: tuple[int, int], image: str) -> None:
    """DataError for a box that misses the image entirely (it would match nothing)."""
    h, w = ori_shape
    x1, y1, x2, y2 = gt.boxes.T  # (4, G) -> 4 x (G,)
    outside = (x1 >= w) | (y1 >= h) | (x2 <= 0) | (y2 <= 0)  # (G,)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise DataError(f"GT box {gt.boxes[k].tolist()} ({gt.source}) lies outside {image}, "
                        f"which is {w}x{h} pixels (w x h)")


def _gt_stats(assignment: ImageAssignment, class_names: Sequence[str],
              thresholds: Optional[np.ndarray] = None) -> list[GTStats]:
    boxes = assignment.gt_boxes.tolist()
    labels = assignment.gt_labels.tolist()
    rows = []
    for g, box in enumerate(boxes):
        label = int(labels[g])
        rows.append(GTStats(
            index=g, label=label,
            class_name=class_names[label] if 0 <= label < len(class_names) else str(label),
            box=box, width=box[2] - box[0], height=box[3] - box[1],
            best_iou=float(assignment.best_iou[g]), best_level=int(assignment.best_level[g]),
            num_pos=int(assignment.num_pos[g]),
            num_pos_per_level=[int(v) for v in assignment.num_pos_per_level[g].tolist()],
            low_quality_only=bool(assignment.low_quality_only[g]),
            iou_threshold=None if thresholds is None else float(thresholds[g])))
    return rows


def prepare(image_path: Path, gt: OriginalGT, pipeline: Sequence[Any], seed: int,
            with_mask: bool = False) -> PipelineView:
    """The image and its GT through the viewing pipeline (step 3); ``with_mask`` (and GT with
    segmentations) takes the GT masks through it too."""
    ann_info: dict[str, Any] = {"bboxes": gt.boxes, "labels": gt.labels,
                                "bboxes_ignore": gt.ignore_boxes}
    with_mask = with_mask and gt.segmentations is not None
    if with_mask:
        ann_info["masks"] = gt.segmentations
    results = {
        "img_info": {"filename": str(image_path), "file_name": image_path.name},
        "ann_info": ann_info,
        "image_id": image_path.stem,
    }
    view = run_pipeline(pipeline, results, seed=seed, with_mask=with_mask)
    _check_inside(gt, view.ori_shape, str(image_path))
    if len(view.gt_boxes) < len(gt.boxes):
        log.warning("the pipeline dropped %d of %d GT boxes (cropped away)",
                    len(gt.boxes) - len(view.gt_boxes), len(gt.boxes))
    return view


def assignment_parts(cfg: Any) -> AssignmentParts:
    """The prior generator, assigner and sampler of the config (step 1)."""
    return AssignmentParts.from_config(cfg)


def ranked_predictions(parts: AssignmentParts, view: PipelineView, seed: int,
                       predictions: Optional[PredictionSource]) -> Optional[Predictions]:
    """Step 4: the predictions an assigner that ranks points by them sees -- ``predictions``'
    for the prepared image, else the stand-in's (seeded) -- or None for any other assigner."""
    if not can.needs_predictions(parts.assigner):
        return None
    if predictions is not None:
        return predictions(view)
    gt_boxes = torch.from_numpy(view.gt_boxes)[None]  # (1, G, 4)
    gt_labels = torch.from_numpy(view.gt_labels)[None].long()  # (1, G)
    outputs = stand_in_outputs(parts, gt_boxes, gt_labels, view.pad_shape,
                               torch.Generator().manual_seed(seed))
    return Predictions(outputs, f"{STAND_IN_TEXT}; seed {seed}")


def visualize_assignment(
    cfg: Any,
    image_path: str | Path,
    gt: OriginalGT,
    *,
    train_pipeline: bool = False,
    seed: int = 0,
    parts: Optional[AssignmentParts] = None,
    predictions: Optional[PredictionSource] = None,
) -> AssignmentView:
    """The assignment of ``image_path``'s GT ``gt`` (step 2: :func:`annotation_gt`, or the
    ``--box`` options) under the config ``cfg`` (a DetConfig), with ``parts`` (default: the
    config's, :func:`assignment_parts`) and, for an assigner that ranks points by the model's
    predictions, ``predictions`` (a trained model's outputs on the prepared image; default the
    stand-in); see the module docstring for the steps."""
    parts = assignment_parts(cfg) if parts is None else parts  # 1.
    assigner = type(parts.assigner).__name__
    image_path = Path(image_path)
    view = prepare(image_path, gt, pipeline_of(cfg, train_pipeline), seed,
                   with_mask=can.has_mask_head(cfg.model))  # 3.

    ranked = ranked_predictions(parts, view, seed, predictions)  # 4.
    generator = torch.Generator().manual_seed(seed)  # 5.
    ignore = torch.from_numpy(view.ignore_boxes) if len(view.ignore_boxes) else None
    assignment = assign_image(parts, torch.from_numpy(view.gt_boxes),
                              torch.from_numpy(view.gt_labels), view.pad_shape,
                              ignore_boxes=ignore, generator=generator, img_shape=view.img_shape,
                              outputs=None if ranked is None else ranked.outputs)
    explained = explain(parts, assignment, ranked)  # 6.
    return AssignmentView(
        image=view.image, filename=str(image_path), img_shape=view.img_shape,
        pad_shape=view.pad_shape, scale_factor=[float(v) for v in view.scale_factor],
        flip=view.flip, priors=assignment.priors.numpy(), level=assignment.level.numpy(),
        gt_index=assignment.gt_index.numpy(), sampled_pos=assignment.sampled_pos.numpy(),
        sampled_neg=assignment.sampled_neg.numpy(), gt_boxes=assignment.gt_boxes.numpy(),
        gt_labels=assignment.gt_labels.numpy(), ignore_boxes=view.ignore_boxes,
        strides=[int(s[0]) for s in parts.strides], class_names=gt.class_names,
        gts=_gt_stats(assignment, gt.class_names, explained.iou_thresholds), assigner=assigner,
        sampler=type(parts.sampler).__name__, assignment=assignment, explained=explained,
        ori_shape=tuple(int(v) for v in view.ori_shape[:2]), head_key=parts.head_key,
        gt_masks=view.gt_masks)
