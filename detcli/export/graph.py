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
2. the priors of each level are computed inside the graph from the feature map's shape by
   the head's own prior generator (its ``single_level_grid_priors``, the
   :class:`~detcli.task.protocols.PriorGenerator` protocol: anchors, or an anchor-free head's
   points, A = 1), and passed to ``candidates``, which decodes the chosen deltas with the head's coder (FCOS: distances in
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

The graph's own steps are module functions as well (:func:`level_priors`,
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
from detcli.models.protocols import DenseHead, Detector
from detcli.task.postprocess import NMSConfig
from detcli.task.protocols import PriorGenerator

OUTPUTS_NMS = ("boxes", "scores", "labels", "num_dets")
OUTPUTS_NO_NMS = ("boxes", "scores", "labels")
OUTPUTS_MASKS = ("mask_probs",)  # after OUTPUTS_NMS: a mask detector's (N, M, h, w)


def level_priors(generator: PriorGenerator, level: int, cls_logits: Tensor) -> Tensor:
    """Priors of ``level`` for its logits (N, A*K, H_l, W_l) of (symbolic) size H_l x W_l, built
    in the graph by the generator's traceable ``single_level_grid_priors``: anchors
    (H_l*W_l*A, 4) or points (H_l*W_l, 2)."""
    return generator.single_level_grid_priors((cls_logits.shape[-2], cls_logits.shape[-1]),
                                              level, cls_logits.device)


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

    ``model`` is a single-stage :class:`~detcli.models.protocols.Detector` (its ``stages``: a
    :class:`~detcli.models.protocols.DenseHead`, no RoI head) whose head's ``test_cfg`` has
    hard NMS; the head's ``prior_generator`` builds each level's priors in the graph.
    """

    def __init__(self, model: Detector, *, nms: bool = True) -> None:
        super().__init__()
        stages = model.stages
        if stages.two_stage:
            raise ExportError(f"{type(model).__name__} cannot be exported by ExportWrapper: it "
                              "needs a single-stage detector (e.g. RetinaNet); a two-stage one "
                              "(rpn_head and roi_head) goes through TwoStageExportWrapper")
        if stages.dense_head is None:
            raise ExportError(f"{type(model).__name__} cannot be exported: the graph runs a "
                              "dense head's candidates and NMS; this detector has none")
        head: DenseHead = stages.dense_head
        cfg = head.test_cfg
        if nms:
            check_hard_nms(cfg.nms, "model.test_cfg.nms")
        self.model = model
        self.head = head
        self.generator: PriorGenerator = head.prior_generator
        self.nms = nms
        self.num_classes = int(head.num_classes)
        self.clip_border = bool(head.bbox_coder.clip_border)
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
        """Priors of ``level`` for its logits (N, A*K, H_l, W_l): :func:`level_priors`."""
        return level_priors(self.generator, level, cls_logits)

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
