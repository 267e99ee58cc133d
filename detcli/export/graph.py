"""What an exported detector computes: network input -> fixed-size detections, NMS included.

N images, H x W the (padded) network input, L levels, H_l x W_l the feature map of level l,
A anchors per location, K classes, k = ``nms_pre`` candidates per level, B = L * k candidates
per image (B = R * K, all of them, when ``nms_pre <= 0``), M = ``max_per_img``, S boxes
selected by NMS in the whole batch.

:class:`ExportWrapper` runs the head's own ``candidates`` -- the code ``predict`` and TTA run
(:mod:`detcli.models.dense_heads.dense_predict`, MMDetection 2.x semantics) -- in a form
``torch.export`` can trace with a symbolic batch size and image size. It differs from the
eager path only where ONNX needs it:

1. per level: sigmoid scores over (location, anchor, class), the k best kept; ``static_k``:
   a level with fewer than k entries is padded with -inf logits (score 0), so k is a
   constant whatever the input size;
2. the priors of each level are computed inside the graph from the feature map's shape
   (same layout as :class:`~detcli.task.prior_generators.anchor_generator.AnchorGenerator`),
   or, for an anchor-free head, its points (A = 1) by the head's own
   :class:`~detcli.task.prior_generators.point_generator.MlvlPointGenerator`, and passed to
   ``candidates``, which decodes the chosen deltas with the head's coder (FCOS: distances in
   pixels first) without clipping; the graph clips (see below);
3. candidates not ``valid`` (at or below ``score_thr``), or with a side at or below
   ``min_bbox_size``, get score 0 -- a mask, not a filter, so shapes stay fixed; scores
   already carry the score factor (ATSS's and FCOS's centerness), applied after the test;
4. ONNX ``NonMaxSuppression`` (:mod:`detcli.export.nms_op`) on boxes (N, B, 4) and per-class
   scores (N, K, B): each candidate's score sits in its label's row, so boxes of different
   classes never suppress each other (one row of scores when ``nms.class_agnostic``); its
   score threshold is 0, skipping exactly the masked candidates;
5. the kept scores are scattered back into (N, K, B) and the M best of each image taken
   (``topk``), padded: slots past ``num_dets`` have box 0, score 0 and label -1.

Boxes are (x1, y1, x2, y2) in pixels of the network input. They are clipped (step 2) to the
input tensor's (H, W) -- the padded size, since one input does not tell each image's own size
-- or, when the graph is exported with a second input ``image_sizes`` (N, 2), to each image's
(h, w) before padding, which is what PyTorch's ``predict`` does. With the padded size, a box
reaching into the padding is clipped later (by the caller) than in PyTorch, so NMS can judge
its overlaps differently: detections at the bottom and right edge of padded images may differ.
Callers divide by their resize factor and clip to the original image (:mod:`detcli.inference`
does).

The graph's own steps are module functions as well (:func:`grid_anchors`,
:func:`clip_in_graph`, :func:`nms_keep`, :func:`top_per_image`, :func:`check_hard_nms`):
:mod:`detcli.export.two_stage_graph` builds Faster R-CNN's graph from the same pieces and the
RPN's own ``candidates``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ExportError
from detcli.export.nms_op import onnx_nms
from detcli.models.dense_heads.dense_predict import size_ok
from detcli.models.detectors.single_stage import SingleStageDetector
from detcli.models.protocols import DenseHead
from detcli.task.postprocess import NMSConfig
from detcli.task.prior_generators.anchor_generator import AnchorGenerator
from detcli.task.prior_generators.point_generator import MlvlPointGenerator

OUTPUTS_NMS = ("boxes", "scores", "labels", "num_dets")
OUTPUTS_NO_NMS = ("boxes", "scores", "labels")
OUTPUTS_MASKS = ("mask_probs",)  # after OUTPUTS_NMS: a mask detector's (N, M, h, w)


def grid_anchors(base_anchors: Tensor, stride: tuple[int, int], feat_h: Any, feat_w: Any) -> Tensor:
    """Anchors of one level, (H_l * W_l * A, 4), for a feature map of (symbolic) size
    ``feat_h`` x ``feat_w``: base anchors (A, 4) shifted by ``(x * stride_w, y * stride_h)``,
    rows ordered (y, x, anchor) as ``AnchorGenerator.grid_priors``."""
    stride_w, stride_h = stride
    device = base_anchors.device
    shift_x = torch.arange(feat_w, device=device, dtype=torch.float32) * stride_w  # (W_l,)
    shift_y = torch.arange(feat_h, device=device, dtype=torch.float32) * stride_h  # (H_l,)
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")  # (H_l, W_l) each
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (H_l*W_l, 1, 4)
    return (shifts + base_anchors[None]).reshape(-1, 4)  # (H_l*W_l, A, 4) -> (H_l*W_l*A, 4)


def clip_to_input(boxes: Tensor, height: Any, width: Any) -> Tensor:
    """Clamp x to [0, width] and y to [0, height]; sizes may be symbolic. (..., 4) -> (..., 4)."""
    x = boxes[..., 0::2].clamp(min=0, max=width)  # (..., 2): x1, x2
    y = boxes[..., 1::2].clamp(min=0, max=height)  # (..., 2): y1, y2
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)  # (..., 4)


def clip_in_graph(boxes: Tensor, images: Tensor, image_sizes: Tensor | None) -> Tensor:
    """Boxes (N, ..., 4) clipped to the input tensor's (H, W), or with ``image_sizes`` (N, 2)
    to each image's (h, w) (see the module docstring)."""
    if image_sizes is None:
        return clip_to_input(boxes, images.shape[-2], images.shape[-1])
    bounds = image_sizes.flip(-1).to(boxes.dtype).repeat(1, 2)  # (N, 4): w, h, w, h
    bounds = bounds.reshape(bounds.shape[0], *([1] * (boxes.dim() - 2)), 4)  # (N, 1.., 4)
    return torch.minimum(boxes.clamp(min=0), bounds)  # (N, ..., 4)


def check_hard_nms(nms_cfg: Any, key: str) -> None:
    """ExportError unless ``nms_cfg`` (at config key ``key``, e.g. ``model.test_cfg.nms``) is
    hard NMS, the only kind ONNX has."""
    if not isinstance(nms_cfg, NMSConfig):
        raise ExportError(
            f"{key.removeprefix('model.')}.type = {nms_cfg.type!r} cannot be exported: ONNX has "
            "hard NMS only",
            hint=f"export with --set {key}.type=nms, or with --no-nms and run soft-NMS on the "
                 "candidates yourself")


def nms_keep(boxes: Tensor, columns: Tensor, max_output: int, iou_threshold: float) -> Tensor:
    """ONNX NonMaxSuppression of boxes (N', B, 4) against every score row of ``columns``
    (N', C, B), score threshold 0 (masked candidates have score 0) -> the kept scores (N', C,
    B): a selected candidate keeps its score, every other entry is 0."""
    selected = onnx_nms(boxes, columns, max_output, iou_threshold,
                        0.0)  # (S, 3): image, column, box
    image, column, box = selected[:, 0], selected[:, 1], selected[:, 2]  # (S,) each
    return torch.zeros_like(columns).index_put(
        (image, column, box), columns[image, column, box])  # (N', C, B)


def top_per_image(scores: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` best of scores (N, X) -> scores (N, count), descending, and their index
    (N, count) into X. Zeros pad X first, so ``count`` may exceed X: a padding slot has score 0
    and an index >= X."""
    flat = torch.cat([scores, scores.new_zeros(scores.shape[0], count)], dim=1)  # (N, X + count)
    return flat.topk(count, dim=1)  # (N, count) each


class ExportWrapper(nn.Module):
    """``forward(images (N, 3, H, W) float32)`` -> ``boxes (N, M, 4)``, ``scores (N, M)``,
    ``labels (N, M)`` int64, ``num_dets (N,)`` int64; with ``nms=False`` the masked candidates
    ``boxes (N, B, 4)``, ``scores (N, B)``, ``labels (N, B)`` before NMS (module docstring).

    ``forward(images, image_sizes)`` with ``image_sizes`` (N, 2) int64, each image's (h, w)
    before padding, clips to those instead of the input tensor, as ``predict`` does with
    ``ImageBatch.img_shapes``: then boxes near the padding, and the NMS among them, come out
    exactly as in PyTorch.

    ``model`` is a single-stage detector: ``bbox_head`` a
    :class:`~detcli.models.protocols.DenseHead` whose ``test_cfg`` has hard NMS and whose
    ``prior_generator`` is an :class:`AnchorGenerator` (``base_anchors``) or a point generator
    with ``single_level_grid_priors`` (FCOS's).
    """

    def __init__(self, model: nn.Module, *, nms: bool = True) -> None:
        super().__init__()
        if not isinstance(model, SingleStageDetector):
            raise ExportError(f"{type(model).__name__} cannot be exported: ExportWrapper needs a "
                              "single-stage detector with a dense bbox_head (e.g. RetinaNet); a "
                              "two-stage one (rpn_head and roi_head) goes through "
                              "TwoStageExportWrapper")
        head: DenseHead = model.bbox_head
        cfg = head.test_cfg
        if nms:
            check_hard_nms(cfg.nms, "model.test_cfg.nms")
        generator = head.prior_generator
        has_anchors = isinstance(generator, AnchorGenerator)
        if not (has_anchors or isinstance(generator, MlvlPointGenerator)):
            raise ExportError(f"the prior generator {type(generator).__name__} cannot be "
                              "exported: the graph builds priors from `base_anchors` and "
                              "`strides` (AnchorGenerator) or with `single_level_grid_priors` "
                              "(MlvlPointGenerator)")
        self.model = model
        self.head = head
        self.point_generator = None if has_anchors else generator
        self.nms = nms
        self.num_classes = int(head.num_classes)
        self.clip_border = bool(head.bbox_coder.clip_border)
        self.strides = [tuple(int(s) for s in stride) for stride in generator.strides]
        for level, base in enumerate(generator.base_anchors if has_anchors else []):
            self.register_buffer(f"base_anchors_{level}", base.clone(), persistent=False)
        self.min_bbox_size = float(cfg.min_bbox_size)
        self.max_per_img = int(cfg.max_per_img)
        self.iou_threshold = float(cfg.nms.iou_threshold)
        self.class_agnostic = bool(cfg.nms.class_agnostic)

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUTS_NMS if self.nms else OUTPUTS_NO_NMS

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> tuple[Tensor, ...]:
        outputs = self.model(images)  # DenseOutputs: L x (N, A*K, H_l, W_l) logits, ...
        priors = [self.level_priors(level, logits)
                  for level, logits in enumerate(outputs.cls_logits)]  # built in the graph
        cand = self.head.candidates(outputs, None, priors, static_k=True)  # (N, B, ...)
        boxes = cand.boxes  # (N, B, 4), not clipped yet
        if self.clip_border:
            boxes = clip_in_graph(boxes, images, image_sizes)  # (N, B, 4)
        keep = cand.valid & size_ok(boxes, self.min_bbox_size)  # (N, B)
        scores = torch.where(keep, cand.scores, torch.zeros_like(cand.scores))  # (N, B)
        if not self.nms:
            return boxes, scores, cand.labels
        return self.suppress(boxes, scores, cand.labels)

    def level_priors(self, level: int, cls_logits: Tensor) -> Tensor:
        """Priors of ``level`` for its logits (N, A*K, H_l, W_l) of (symbolic) size H_l x W_l:
        anchors (H_l*W_l*A, 4), or points (H_l*W_l, 2) ``(x + offset) * stride`` from the point
        generator's own uncached, traceable ``single_level_grid_priors``."""
        feat_h, feat_w = cls_logits.shape[-2], cls_logits.shape[-1]
        if self.point_generator is not None:
            return self.point_generator.single_level_grid_priors((feat_h, feat_w), level,
                                                                 cls_logits.device)
        return grid_anchors(getattr(self, f"base_anchors_{level}"), self.strides[level],
                            feat_h, feat_w)

    def suppress(self, boxes: Tensor, scores: Tensor, labels: Tensor
                 ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Masked candidates (N, B, ...) -> padded detections (N, M, ...) and counts; steps 4-5."""
        num_images, num_cand = scores.shape
        if self.class_agnostic:
            columns = scores[:, None, :]  # (N, 1, B)
        else:
            columns = scores.new_zeros(num_images, self.num_classes, num_cand).scatter(
                1, labels[:, None, :], scores[:, None, :])  # (N, K, B): score in its label's row
        # The score test was the mask (step 3), made before any score factor: NMS only has to
        # skip the masked (zero) scores.
        kept = nms_keep(boxes, columns, self.max_per_img, self.iou_threshold)  # (N, C, B)
        top_scores, top_index = top_per_image(kept.reshape(num_images, -1),
                                              self.max_per_img)  # (N, M) each
        valid = top_scores > 0  # (N, M): kept scores are > 0, masked ones and filler are 0
        box_index = (top_index % num_cand).clamp(max=num_cand - 1)  # (N, M)
        if self.class_agnostic:
            out_labels = torch.gather(labels, 1, box_index)  # (N, M)
        else:
            out_labels = torch.div(top_index, num_cand, rounding_mode="floor")  # (N, M)
        out_labels = torch.where(valid, out_labels, torch.full_like(out_labels, -1))  # (N, M)
        out_boxes = torch.gather(boxes, 1, box_index[..., None].expand(-1, -1, 4))  # (N, M, 4)
        out_boxes = out_boxes * valid[..., None].to(out_boxes.dtype)  # (N, M, 4), 0 past num_dets
        return out_boxes, top_scores, out_labels, valid.sum(dim=1)
