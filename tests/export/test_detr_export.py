"""DETR to ONNX: the network and its top-k in the graph, dynamic batch, checked against
PyTorch's predict_batch."""

from __future__ import annotations

import pytest
import torch

from detcli.config.loader import load_config
from detcli.errors import ExportError
from detcli.export.onnx import ExportOptions, export_onnx
from detcli.models.build import build_detector
from tests.export.query_export import check_dynamic_batch_export

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def detr():
    torch.manual_seed(0)
    return build_detector(load_config("detr_tiny_synth", []).cfg.model).eval()


def test_dynamic_batch_export_matches_predict(detr, tmp_path):
    check_dynamic_batch_export(detr, tmp_path / "detr.onnx", num_dets=20)


def test_no_nms_export_is_refused(detr, tmp_path):
    with pytest.raises(ExportError, match="has no NMS to leave out"):
        export_onnx(detr, tmp_path / "x.onnx", input_size=(128, 160),
                    options=ExportOptions(nms=False))
