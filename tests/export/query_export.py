"""The query-based detectors' export check (DETR, Deformable DETR, DINO), shared by their tests.

Each tiny preset is exported with a dynamic batch at 128 x 160 and run by onnxruntime on
random batches of 1 and 3 images; its top-k detections must be PyTorch's ``predict_batch``:
every image's count, the labels exactly, boxes within 1e-3 px and scores within 1e-5.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from detcli.config.loader import load_config
from detcli.export.onnx import ExportOptions, ExportResult, export_onnx
from detcli.export.runtime import OnnxModel
from detcli.models.build import build_detector
from detcli.structures.batch import ImageBatch

INPUT_SIZE = (128, 160)  # (h, w) traced; the batch size is dynamic
BATCHES = ((1, 1), (3, 2))  # (images, seed of their random pixels)


def spread_query_detector(preset: str, overrides: Sequence[str] = ()) -> nn.Module:
    """``preset``'s model (seed 0, ``init_weights``) in eval mode with scores that differ across
    classes and queries and boxes that move: each class branch's weights drawn from N(0, 0.5),
    the last layer of each box branch from N(0, 0.05). For heads with per-layer
    ``cls_branches`` and ``reg_branches`` (Deformable DETR, DINO)."""
    torch.manual_seed(0)
    detector = build_detector(load_config(preset, list(overrides)).cfg.model)
    detector.init_weights()
    with torch.no_grad():
        for branch in detector.bbox_head.cls_branches:
            branch.weight.normal_(0.0, 0.5)
        for branch in detector.bbox_head.reg_branches:
            branch[-1].weight.normal_(0.0, 0.05)
    return detector.eval()


def check_dynamic_batch_export(model: nn.Module, path: Path, num_dets: int,
                               label: str = "") -> ExportResult:
    """Export ``model`` to ``path`` (dynamic batch) and assert onnxruntime's detections on each
    of :data:`BATCHES` are ``predict_batch``'s, ``num_dets`` per image (module docstring);
    prints the largest box and score differences (``label`` first). The export's result."""
    result = export_onnx(model, path, input_size=INPUT_SIZE,
                         options=ExportOptions(dynamic_batch=True))
    assert result.input_shape[0] == "batch"
    runner = OnnxModel(result.path)
    for num, seed in BATCHES:
        batch = torch.randn(num, 3, *INPUT_SIZE, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = model.predict_batch(ImageBatch.from_tensor(batch), rescale=False)
        boxes, scores, labels, dets = runner.run(batch)
        assert dets.tolist() == [num_dets] * num == ref.num_dets.tolist()
        assert torch.equal(labels, ref.labels)
        torch.testing.assert_close(boxes, ref.boxes, rtol=0, atol=1e-3)
        torch.testing.assert_close(scores, ref.scores, rtol=0, atol=1e-5)
        print(f"{label}N={num}: boxes within {float((boxes - ref.boxes).abs().max()):.2e} px, "
              f"scores within {float((scores - ref.scores).abs().max()):.2e}")
    return result
