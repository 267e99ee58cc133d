"""The ONNX graph of a query-based detector (DETR, Deformable DETR): the network and its top-k,
no NMS.

N images, (H, W) the input, Q queries, M = ``test_cfg.max_per_img``.

``forward(images (N, 3, H, W))`` -> ``boxes (N, M, 4)``, ``scores (N, M)``, ``labels (N, M)``
int64 and ``num_dets (N,)`` int64 (always M: DETR keeps its top M queries), the outputs of the
dense graph with NMS, so the runtime and the verification read them the same way. Without
``image_sizes`` every image fills the input (no padding mask: MMDetection's ONNX path) and the
boxes are clipped to (H, W); with ``image_sizes`` (N, 2) int64, each image's (h, w) before
padding, the attention masks the padding and the boxes are clipped to each image, as
``predict`` does with ``ImageBatch.img_shapes``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detcli.errors import ExportError
from detcli.export.graph import OUTPUTS_NMS
from detcli.models.detectors.detr import QueryDetector
from detcli.models.protocols import Detector


def is_query_based(model: Detector) -> bool:
    """Whether ``model`` is a query-based detector exported by :class:`QueryExportWrapper`:
    its stages declare neither a dense head nor an RoI head (its ``bbox_head`` is a
    ``QueryHead``)."""
    stages = model.stages
    return stages.dense_head is None and stages.roi_head is None


class QueryExportWrapper(nn.Module):
    """A query detector's network and top-k post-processing in one traced graph (module
    docstring); the network's part is the detector's ``query_outputs``, as ``predict``'s."""

    output_names = OUTPUTS_NMS

    def __init__(self, model: QueryDetector, *, nms: bool = True) -> None:
        super().__init__()
        if not nms:
            raise ExportError(f"{type(model).__name__} has no NMS to leave out: its graph ends "
                              "with the top-k queries; export it without --no-nms")
        self.model = model

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> tuple[Tensor, ...]:
        outputs = self.model.query_outputs(images, image_sizes, last_layer_only=True)
        if image_sizes is None:
            ones = torch.ones_like(images[:, 0, 0, :2], dtype=torch.int64)  # (N, 2)
            image_sizes = ones * torch.tensor(images.shape[-2:], dtype=torch.int64)
        cand = self.model.bbox_head.candidates(outputs, image_sizes)  # (N, M, ...)
        num_dets = torch.ones_like(cand.labels[:, 0]) * cand.labels.shape[1]  # (N,)
        return cand.boxes, cand.scores, cand.labels, num_dets
