"""The ONNX graph of a query-based detector (DETR): the network and its top-k, no NMS.

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
from detcli.models.detectors.detr import DETR


def is_query_based(model: nn.Module) -> bool:
    """Whether ``model`` is a query-based detector exported by :class:`QueryExportWrapper`."""
    return isinstance(model, DETR)


class QueryExportWrapper(nn.Module):
    """DETR's network and top-k post-processing in one traced graph (module docstring)."""

    output_names = OUTPUTS_NMS

    def __init__(self, model: DETR, *, nms: bool = True) -> None:
        super().__init__()
        if not nms:
            raise ExportError(f"{type(model).__name__} has no NMS to leave out: its graph ends "
                              "with the top-k queries; export it without --no-nms")
        self.model = model

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> tuple[Tensor, ...]:
        hidden = self.model.hidden_states(images, image_sizes)[-1:]  # (1, N, Q, D)
        outputs = self.model.bbox_head(hidden)
        if image_sizes is None:
            ones = torch.ones_like(images[:, 0, 0, :2], dtype=torch.int64)  # (N, 2)
            image_sizes = ones * torch.tensor(images.shape[-2:], dtype=torch.int64)
        cand = self.model.bbox_head.candidates(outputs, image_sizes)  # (N, M, ...)
        num_dets = torch.ones_like(cand.labels[:, 0]) * cand.labels.shape[1]  # (N,)
        return cand.boxes, cand.scores, cand.labels, num_dets
