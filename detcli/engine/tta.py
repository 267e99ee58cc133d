"""Test-time augmentation: map every view's boxes back to the original image, merge, NMS again;
a mask detector then segments the merged boxes in every view and averages the masks.

N images per batch, V views (``MultiScaleFlipAug``: scales x flips), L levels, P_v candidates
per image of view v, P = sum_v P_v, M the merge's ``max_per_img``, h x w the mask head's
output size (28 x 28).

Semantics are MMDetection 2.x's ``BBoxTestMixin.aug_test_bboxes`` for dense heads:

1. per view, the head's pre-NMS candidates: per level the ``nms_pre`` top (prior, class) scores,
   decoded and clipped to the view's image, kept where the score is above ``score_thr``
   (MMDetection: ``get_bboxes(..., rescale=False, with_nms=False)``);
2. each view's boxes are mapped back to the original image (``bbox_mapping_back``): un-flipped
   inside the view's ``img_shape`` (horizontal: x -> w - x, vertical: y -> h - y, diagonal:
   both), then divided by the view's ``scale_factor``;
3. the candidates of all views are concatenated per image (scores are not averaged) and one
   NMS with ``test_cfg.nms`` (class-aware unless ``class_agnostic``) keeps at most
   ``max_per_img`` per image;
4. with a mask branch (Mask R-CNN, Cascade Mask R-CNN; MMDetection 2.x's ``aug_test_mask``):
   the merged boxes are mapped into every view (``bbox_mapping``: times the view's scale
   factor, then flipped in its ``img_shape``), the view's mask head segments them there (the
   RoI head's ``predict_mask_probs``: the (h, w) probability of each box's class), each view's
   probabilities are un-flipped (a horizontal flip reverses the w axis, a vertical one the h
   axis, a diagonal one both), averaged over the V views, and pasted over the merged boxes
   into the original image with ``test_cfg.rcnn.mask_thr_binary``, as ``predict`` pastes.
   MMDetection 3.3's ``DetTTAModel`` refuses masks ("TTA of instance segmentation does not
   support now"); det keeps 2.x's rule.

The merge's NMS and cap are the config's ``[tta]`` (:class:`TTAConfig`, MMDetection 3.3's
``tta_model.tta_cfg``): by default the model's own ``test_cfg.nms`` and ``max_per_img``; a
detector whose ``test_cfg`` has no NMS (DETR, Deformable DETR, DINO: top-k queries) gets
MMDetection's ``tta_cfg`` default, ``nms = {type = "nms", iou_threshold = 0.5}``, its views'
top-k detections merged as ``DetTTAModel`` merges them. ``nms = false`` merges without NMS:
the ``max_per_img`` best-scoring candidates of all views.

Differences from MMDetection: the whole batch is merged at once (MMDetection takes one image);
``min_bbox_size`` drops candidates after step 2, in original pixels, as the head's own
``predict`` does. Step 1 is the detector's ``candidates`` (:class:`~detcli.models.protocols.
Detector`): a single-stage detector's are its dense head's ``candidates`` -- the same code
``predict`` and the ONNX graph run; a two-stage detector gives its post-NMS detections per
view, which are mapped back and NMS-ed the same way. Step 4 extracts each view's features a
second time (``candidates`` does not hand them out), so a mask detector's TTA runs its
backbone twice per view.

:func:`enable_tta` prepares a dataset config: a test pipeline whose ``MultiScaleFlipAug`` has
one scale and ``flip = false`` gets ``flip = true`` (otherwise TTA would change nothing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Annotated, Literal, Optional, Sequence, Union

import torch
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Maybe, Schema
from detcli.data.transforms.geometric import scale_list
from detcli.data.transforms.test_time import MultiScaleFlipAugConfig
from detcli.errors import ConfigError, DetError
from detcli.models.dense_heads.dense_predict import size_ok
from detcli.models.introspect import detection_test_cfg
from detcli.models.detectors.single_stage import TrunkDetector
from detcli.models.protocols import Detector, RoIHead
from detcli.models.roi_heads.mask_paste import paste_detections
from detcli.structures.batch import ImageBatch
from detcli.structures.dense import Candidates
from detcli.structures.detections import DetectionBatch, Detections
from detcli.task.postprocess import NMSConfig, NMSSettings, nms_to_batch

log = logging.getLogger(__name__)

FLIPS_X = ("horizontal", "diagonal")
FLIPS_Y = ("vertical", "diagonal")


def flip_directions(images: ImageBatch) -> list[str | None]:
    """Each image's flip direction from its metas; None where it is not flipped."""
    metas = images.metas or [{} for _ in range(len(images))]
    return [(m.get("flip_direction") or "horizontal") if m.get("flip") else None for m in metas]


def unflip_boxes(boxes: Tensor, img_shapes: Tensor, directions: Sequence[str | None]) -> Tensor:
    """Undo each image's flip: boxes (N, P, 4) inside images of (h, w) ``img_shapes`` (N, 2),
    ``directions`` N of "horizontal" / "vertical" / "diagonal" / None. The inverse of
    ``RandomFlip``'s box flip (a flip is its own inverse): x1, x2 -> w - x2, w - x1."""
    unknown = sorted({d for d in directions if d is not None} - {*FLIPS_X, *FLIPS_Y})
    if unknown:
        raise DetError(f"unknown flip_direction {unknown[0]!r} in img_metas; expected one of "
                       "horizontal, vertical, diagonal")
    device = boxes.device
    flip_x = torch.tensor([d in FLIPS_X for d in directions], device=device)[:, None]  # (N, 1)
    flip_y = torch.tensor([d in FLIPS_Y for d in directions], device=device)[:, None]  # (N, 1)
    h = img_shapes[:, 0:1].to(boxes)  # (N, 1)
    w = img_shapes[:, 1:2].to(boxes)  # (N, 1)
    x1, y1, x2, y2 = boxes.unbind(-1)  # (N, P) each
    x1, x2 = torch.where(flip_x, w - x2, x1), torch.where(flip_x, w - x1, x2)
    y1, y2 = torch.where(flip_y, h - y2, y1), torch.where(flip_y, h - y1, y2)
    return torch.stack([x1, y1, x2, y2], dim=-1)  # (N, P, 4)


def map_back(boxes: Tensor, images: ImageBatch) -> Tensor:
    """Boxes (N, P, 4) in a view's network-input pixels -> original-image pixels: un-flip in
    the view's ``img_shape``, then divide by its ``scale_factor`` (``bbox_mapping_back``)."""
    img_shapes = images.img_shapes.to(boxes.device, torch.float32)  # (N, 2)
    unflipped = unflip_boxes(boxes, img_shapes, flip_directions(images))  # (N, P, 4)
    return unflipped / images.scale_factors.to(unflipped)[:, None, :]  # (N, P, 4)


def view_candidates(model: Detector, images: ImageBatch) -> Candidates:
    """One view's candidates (see the module docstring, step 1)."""
    return model.candidates(images)


class TTAConfig(Schema):
    """``[tta]``: how ``det test --tta`` merges the views (MMDetection 3.3's
    ``tta_model.tta_cfg``; the module docstring).

    ``nms``: ``"model"`` (default) the model's ``test_cfg.nms``, or MMDetection's
    ``{type = "nms", iou_threshold = 0.5}`` for a detector without one (DETR, Deformable DETR,
    DINO); a table: that NMS; ``false``: no NMS, the ``max_per_img`` best of all views.
    ``max_per_img``: ``"model"`` (default) the model's ``test_cfg.max_per_img``, or a count.
    """

    nms: Maybe[Union[NMSSettings, Literal["model"]]] = "model"
    max_per_img: Union[Annotated[int, Field(ge=1)], Literal["model"]] = "model"


TTA_NMS = NMSConfig(iou_threshold=0.5)  # MMDetection 3.3's configs' tta_cfg.nms


@dataclass(frozen=True)
class MergeSettings:
    """The merge's resolved settings (:func:`merge_settings`); with an ``nms`` it is what
    :func:`~detcli.task.postprocess.nms_to_batch` reads."""

    nms: Optional[NMSSettings]  # None: no NMS, the max_per_img best
    max_per_img: int
    min_bbox_size: float


def merge_settings(model: Detector, tta: TTAConfig | None = None) -> MergeSettings:
    """``tta`` (None: the defaults) resolved against the model's ``detection_test_cfg``."""
    tta = tta if tta is not None else TTAConfig()
    cfg = detection_test_cfg(model)
    fields = type(cfg).model_fields
    nms = tta.nms
    if nms == "model":
        nms = cfg.nms if "nms" in fields else TTA_NMS
    max_per_img = cfg.max_per_img if tta.max_per_img == "model" else tta.max_per_img
    return MergeSettings(nms=nms, max_per_img=int(max_per_img),
                         min_bbox_size=float(cfg.min_bbox_size) if "min_bbox_size" in fields
                         else 0.0)


def merge_note(model: Detector, tta: TTAConfig | None = None) -> str | None:
    """What ``det test --tta`` tells the user about the merge it runs (None: nothing new): a
    detector without an NMS of its own is merged with MMDetection's ``tta_cfg`` NMS."""
    tta = tta if tta is not None else TTAConfig()
    cfg = detection_test_cfg(model)
    if tta.nms != "model" or "nms" in type(cfg).model_fields:
        return None
    return (f"{type(model).__name__} keeps its top-k queries without NMS; --tta merges the "
            f"views with tta.nms = {{type = \"nms\", iou_threshold = "
            f"{TTA_NMS.iou_threshold}}} (MMDetection's tta_cfg; tta.nms = false: no NMS)")


def best_to_batch(boxes: Tensor, scores: Tensor, labels: Tensor, keep: Tensor,
                  max_per_img: int) -> DetectionBatch:
    """The merge without NMS: (N, P, ...) candidates -> DetectionBatch (N, M), each image's
    ``max_per_img`` best-scoring candidates that ``keep`` marks, scores descending (ties in
    view order: a stable sort)."""
    masked = torch.where(keep, scores, torch.full_like(scores, -float("inf")))  # (N, P)
    order = torch.sort(masked, dim=1, descending=True, stable=True).indices  # (N, P)
    order = order[:, :max_per_img]  # (N, M') with M' = min(M, P)
    num_dets = keep.sum(1).clamp(max=max_per_img)  # (N,)
    slots = torch.arange(max_per_img, device=scores.device)[None, :]  # (1, M)
    used = slots < num_dets[:, None]  # (N, M)
    pad = max_per_img - order.shape[1]
    order = torch.nn.functional.pad(order, (0, pad))  # (N, M): padding slots read column 0
    out_boxes = boxes.gather(1, order[..., None].expand(-1, -1, 4)) * used[..., None]
    out_scores = scores.gather(1, order) * used
    out_labels = torch.where(used, labels.gather(1, order), torch.full_like(order, -1))
    return DetectionBatch(boxes=out_boxes, scores=out_scores, labels=out_labels,
                          num_dets=num_dets)


def merge_boxes(model: Detector, views: Sequence[ImageBatch],
                settings: MergeSettings) -> DetectionBatch:
    """Steps 1-3: the views' candidates mapped back, merged -> (N, M), original pixels."""
    boxes, scores, labels, valid = [], [], [], []
    for images in views:
        cand = view_candidates(model, images)
        boxes.append(map_back(cand.boxes.float(), images))
        scores.append(cand.scores)
        labels.append(cand.labels)
        valid.append(cand.valid)
    boxes_all = torch.cat(boxes, dim=1)  # (N, P, 4)
    scores_all, labels_all = torch.cat(scores, dim=1), torch.cat(labels, dim=1)  # (N, P)
    keep = torch.cat(valid, dim=1) & size_ok(boxes_all, settings.min_bbox_size)  # (N, P)
    if settings.nms is None:
        return best_to_batch(boxes_all, scores_all, labels_all, keep, settings.max_per_img)
    return nms_to_batch(boxes_all, scores_all, labels_all, keep, settings)  # type: ignore[arg-type]


def map_into(boxes: Tensor, images: ImageBatch) -> Tensor:
    """Boxes (N, M, 4) in original-image pixels -> a view's network-input pixels: times its
    ``scale_factor``, then flipped in its ``img_shape`` (``bbox_mapping``; :func:`map_back`'s
    inverse)."""
    scaled = boxes * images.scale_factors.to(boxes)[:, None, :]  # (N, M, 4)
    img_shapes = images.img_shapes.to(boxes.device, torch.float32)  # (N, 2)
    return unflip_boxes(scaled, img_shapes, flip_directions(images))  # (N, M, 4)


def unflip_masks(probs: Tensor, directions: Sequence[str | None]) -> Tensor:
    """Mask probabilities (N, M, h, w) predicted in flipped views -> as if unflipped: a box's
    mask is flipped with it, so horizontal reverses w, vertical h, diagonal both
    (MMDetection 2.x's ``merge_aug_masks``)."""
    rows = []
    for i, direction in enumerate(directions):
        row = probs[i]  # (M, h, w)
        if direction in FLIPS_X:
            row = row.flip(-1)
        if direction in FLIPS_Y:
            row = row.flip(-2)
        rows.append(row)
    return torch.stack(rows)  # (N, M, h, w)


def mask_roi_head(model: Detector) -> RoIHead | None:
    """The RoI head that segments (its ``with_mask``), or None: a box-only detector."""
    roi_head = model.stages.roi_head
    return roi_head if roi_head is not None and roi_head.with_mask else None


def merged_mask_probs(model: TrunkDetector, roi_head: RoIHead, views: Sequence[ImageBatch],
                      dets: DetectionBatch) -> Tensor:
    """Step 4: merged dets (N, M), original pixels -> (N, M, h, w) mask probabilities, each
    view's segmentation of the boxes mapped into it, un-flipped, averaged over the views."""
    total = None
    for images in views:
        in_view = replace(dets, boxes=map_into(dets.boxes.float(), images))  # (N, M)
        feats = model.extract_feat(images.tensor)
        probs = roi_head.predict_mask_probs(feats, in_view).float()  # (N, M, h, w)
        probs = unflip_masks(probs, flip_directions(images))
        total = probs if total is None else total + probs
    assert total is not None
    return total / len(views)  # (N, M, h, w)


def merge_views(model: Detector, views: Sequence[ImageBatch],
                tta: TTAConfig | None = None) -> list[Detections]:
    """TTA detections of N images from their V view batches, boxes in original pixels; a mask
    detector's with ``masks`` (D, H, W) bool in the original images (module docstring)."""
    if not views:
        raise DetError("test-time augmentation got no views")
    settings = merge_settings(model, tta)
    merged = merge_boxes(model, views, settings)
    roi_head = mask_roi_head(model)
    if roi_head is None:
        return merged.unbind()
    if not isinstance(model, TrunkDetector):
        raise DetError(f"test-time augmentation of masks extracts each view's features with "
                       f"extract_feat, which {type(model).__name__} does not have")
    merged = replace(merged, mask_probs=merged_mask_probs(model, roi_head, views, merged))
    ori_shapes = [(int(h), int(w)) for h, w in views[0].ori_shapes]
    threshold = detection_test_cfg(model).mask_thr_binary  # test_cfg.rcnn of a mask detector
    return paste_detections(merged, ori_shapes, threshold=threshold)


def _num_scales(step: MultiScaleFlipAugConfig) -> int:
    if step.img_scale is not None:
        return len(scale_list(step.img_scale) or [])
    return len(step.scale_factor) if isinstance(step.scale_factor, list) else 1


def _tta_step(pipeline: list[Schema]) -> int:
    found = [i for i, t in enumerate(pipeline) if isinstance(t, MultiScaleFlipAugConfig)]
    if not found:
        raise ConfigError(
            "--tta needs a MultiScaleFlipAug step in the test pipeline; it has "
            f"{[getattr(t, 'type', '?') for t in pipeline]}",
            hint="wrap the test transforms in { type = \"MultiScaleFlipAug\", img_scale = [...], "
                 "flip = true, transforms = [...] }")
    return found[0]


def enable_tta(dataset_cfg: Schema, where: str = "data.test") -> tuple[Schema, str | None]:
    """``dataset_cfg`` ready for TTA, and a note saying what was changed (None: nothing).

    A ``MultiScaleFlipAug`` with one scale and ``flip = false`` gets ``flip = true``; one whose
    views would not be flipped (no ``RandomFlip`` inside) is a ConfigError.
    """
    pipeline = list(dataset_cfg.pipeline)  # type: ignore[attr-defined]
    index = _tta_step(pipeline)
    step: MultiScaleFlipAugConfig = pipeline[index]  # type: ignore[assignment]
    note = None
    if _num_scales(step) == 1 and not step.flip:
        step = step.model_copy(update={"flip": True})
        note = (f"{where}.pipeline: MultiScaleFlipAug has one scale and flip = false; --tta "
                f"adds flip = true ({step.flip_direction}) so there is something to merge")
    if step.flip and not any(getattr(t, "type", None) == "RandomFlip" for t in step.transforms):
        raise ConfigError(f"{where}.pipeline: MultiScaleFlipAug has flip = true but no RandomFlip "
                          "in its transforms, so its flipped views would not be flipped",
                          hint="add { type = \"RandomFlip\" } after Resize in its transforms")
    pipeline[index] = step
    return dataset_cfg.model_copy(update={"pipeline": pipeline}), note


def num_views(dataset_cfg: Schema) -> int:
    """Views the dataset's MultiScaleFlipAug makes per image (1 without one)."""
    for step in getattr(dataset_cfg, "pipeline", []):
        if isinstance(step, MultiScaleFlipAugConfig):
            flips = len(step.flip_direction) if isinstance(step.flip_direction, list) else 1
            return _num_scales(step) * (1 + (flips if step.flip else 0))
    return 1
