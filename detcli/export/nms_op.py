"""ONNX ``NonMaxSuppression`` as a PyTorch custom op, so the exporter writes the real ONNX node.

N images, C score columns (K classes, or 1 when class-agnostic), B candidate boxes per image,
S selected (image, column, box) triples.

``torch.ops.detcli.onnx_nms(boxes (N, B, 4), scores (N, C, B), max_output_boxes_per_class,
iou_threshold, score_threshold) -> selected (S, 3) int64`` has ONNX's semantics (opset 11+):
within each (image, column), boxes scoring strictly above ``score_threshold`` are visited by
descending score and kept unless their IoU with a kept box of the same (image, column) is
strictly above ``iou_threshold``; at most ``max_output_boxes_per_class`` are kept per
(image, column). Rows are (image, column, box), sorted by image, then column, then score.
These are the rules of :func:`detcli.task.postprocess.multiclass_nms` with clusters
``image * K + label``, so the exported graph keeps what ``predict`` keeps.

Three implementations of one op:

- eager (CPU/CUDA): the reference the ONNX run is compared with. It runs
  :func:`detcli.ops.nms.batched_nms` (float64) -- fine here, this code is never traced;
- fake (``torch.export``): S is a data-dependent size, so nothing about the kept boxes can be
  baked into the graph as a constant;
- ONNX (:func:`nms_translation`, passed to ``torch.onnx.export(custom_translation_table=...)``):
  one ``NonMaxSuppression`` node with ``center_point_box = 0``. ONNX names the corners
  (y1, x1, y2, x2), but its IoU is symmetric in x and y, so (x1, y1, x2, y2) boxes give the
  same overlaps.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detcli.ops.nms import batched_nms

OP_NAMESPACE = "detcli"


@torch.library.custom_op(f"{OP_NAMESPACE}::onnx_nms", mutates_args=())
def onnx_nms(boxes: Tensor, scores: Tensor, max_output_boxes_per_class: int,
             iou_threshold: float, score_threshold: float) -> Tensor:
    """ONNX NonMaxSuppression: boxes (N, B, 4), scores (N, C, B) -> selected (S, 3) int64."""
    num_columns = scores.shape[1]
    above = scores > score_threshold  # (N, C, B)
    index = above.nonzero()  # (S0, 3) rows (image, column, box), ascending
    cand_scores = scores[above]  # (S0,)
    cand_boxes = boxes[index[:, 0], index[:, 2]]  # (S0, 4)
    cluster = index[:, 0] * num_columns + index[:, 1]  # (S0,)
    kept = batched_nms(cand_boxes, cand_scores, cluster, iou_threshold)  # (S1,) score order
    # Group by (image, column); the stable sort keeps the score order inside each group.
    kept = kept[torch.sort(cluster[kept], stable=True).indices]  # (S1,)
    kept_cluster = cluster[kept]  # (S1,) ascending
    first = torch.searchsorted(kept_cluster, kept_cluster)  # (S1,) start of each group
    rank = torch.arange(kept.shape[0], device=kept.device) - first  # (S1,) rank in its group
    return index[kept[rank < max_output_boxes_per_class]]  # (S, 3)


@onnx_nms.register_fake
def _onnx_nms_fake(boxes: Tensor, scores: Tensor, max_output_boxes_per_class: int,
                   iou_threshold: float, score_threshold: float) -> Tensor:
    num_selected = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((num_selected, 3), dtype=torch.int64)  # (S, 3)


def nms_translation(boxes: Any, scores: Any, max_output_boxes_per_class: int,
                    iou_threshold: float, score_threshold: float) -> Any:
    """The ONNX graph of :func:`onnx_nms` (an onnxscript function, used by the exporter)."""
    from onnxscript import opset18 as op  # the export extra; imported only when exporting

    return op.NonMaxSuppression(
        boxes, scores,
        op.Constant(value_ints=[max_output_boxes_per_class]),
        op.Constant(value_floats=[iou_threshold]),
        op.Constant(value_floats=[score_threshold]),
        center_point_box=0,
    )


def translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export`` (dynamo exporter)."""
    return {torch.ops.detcli.onnx_nms.default: nms_translation}
