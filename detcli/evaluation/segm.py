"""What COCO mask evaluation (``evaluation.metric = "segm"``) adds to the box evaluation.

G GT boxes and Ig ignore boxes of one image. :class:`~detcli.evaluation.coco.CocoEvaluator`
with ``iou_type = "segm"`` is MMDetection 3.3's ``CocoMetric`` with metric "segm": pycocotools'
``COCOeval(gt, results, "segm")``, whose IoU is the mask IoU (intersection over union of the
pixel sets, ``pycocotools.mask.iou``). This module supplies its two inputs:

- **GT masks.** A COCO dataset is scored against its own annotation file's ``segmentation``
  (polygons or RLE; :func:`check_gt_segmentations` names annotations without one). Any other
  dataset's in-memory GT (:func:`gt_segmentations`) takes each GT box's segmentation from the
  dataset (``get_ann_masks``: YOLO polygon labels, in pixels); an ignore box becomes a crowd
  region shaped as its box. ``area`` stays the box's width x height, as MMDetection's
  ``gt_to_coco_json`` leaves it. A dataset without masks (VOC, YOLO box labels) is a
  ConfigError naming it.
- **Mask results.** Each COCO result carries its detection's mask as compressed RLE
  (``segmentation``, :class:`~detcli.structures.mask_rle.MaskRLE`); :func:`segm_results`
  drops the ``bbox`` before ``loadRes``, so pycocotools takes a detection's area (which decides
  small / medium / large) and box from its mask, as MMDetection does.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pycocotools.coco import COCO

from detcli.data.masks_io import NoMasks
from detcli.errors import ConfigError, DataError
from detcli.structures.masks import usable_parts

METRIC = "segm"


def box_polygon(box: Sequence[float]) -> list[list[float]]:
    """An (x1, y1, x2, y2) box as a COCO polygon segmentation (its four corners)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [[x1, y1, x1, y2, x2, y2, x2, y1]]


def _checked(segm: Any, where: str) -> Any:
    """``segm`` as pycocotools reads it (polygon parts it can rasterise, or an RLE dict), or a
    DataError naming ``where``."""
    if isinstance(segm, NoMasks):
        raise DataError(f"{where} {segm.reason}; evaluation.metric 'segm' needs a mask for "
                        "every GT box")
    if isinstance(segm, dict) and "counts" in segm and "size" in segm:
        return segm
    if isinstance(segm, (list, tuple)):
        parts = usable_parts(segm)
        if parts:
            return [p.tolist() for p in parts]
        raise DataError(f"{where} has no usable polygon (each part needs at least 3 points)",
                        hint="det data check lists the bad segmentations")
    raise DataError(f"{where} has no segmentation; evaluation.metric 'segm' needs a mask for "
                    "every GT box")


def gt_segmentations(dataset: Any, i: int, crowd_boxes: np.ndarray) -> list[Any]:
    """COCO segmentations of dataset image ``i``'s G GT boxes (``get_ann_info(i)["bboxes"]``
    order, from ``dataset.get_ann_masks(i)``), then of ``crowd_boxes`` (Ig', 4): their boxes.

    ConfigError when the dataset has no masks; DataError naming the file and annotation when
    one GT box has none."""
    masks = dataset.get_ann_masks(i)
    if isinstance(masks, NoMasks):
        raise ConfigError(f"evaluation.metric 'segm' needs GT instance masks, but {masks.reason}",
                          hint="evaluate 'bbox' only, or use a COCO annotation file with "
                               "`segmentation` (or YOLO polygon labels)")
    names = dataset.get_ann_names(i)
    source = dataset.ann_source(i)
    segms = [_checked(segm, f"{source}: {name}") for segm, name in zip(masks, names)]
    return segms + [box_polygon(box) for box in np.asarray(crowd_boxes).reshape(-1, 4)]


def check_gt_segmentations(coco: COCO, img_ids: Sequence[int], source: str) -> None:
    """DataError naming the annotations of ``img_ids`` in ``coco`` that have no
    ``segmentation`` (absent, null or an empty list), which pycocotools cannot score."""
    missing = [ann.get("id") for img_id in img_ids for ann in coco.imgToAnns.get(img_id, [])
               if not ann.get("segmentation")]
    if missing:
        raise DataError(f"{source}: {len(missing)} annotation(s) have no `segmentation` (ids "
                        f"{missing[:5]}{' ...' if len(missing) > 5 else ''}); evaluation.metric "
                        "'segm' needs a mask for every annotation",
                        hint="evaluate 'bbox' only, or add the masks (det data check lists them)")


def segm_results(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """COCO results for iouType "segm": each without ``bbox`` (module docstring). A result
    without a ``segmentation`` is a ConfigError: the detector gives no masks."""
    if any("segmentation" not in r for r in results):
        raise ConfigError("evaluation.metric 'segm' scores masks, but the detections have none "
                          "(a box-only detector)",
                          hint="evaluate 'bbox' only, or test a model with a mask head "
                               "(MaskRCNN, CascadeRCNN with mask_head)")
    return [{k: v for k, v in r.items() if k != "bbox"} for r in results]
