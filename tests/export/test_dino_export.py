"""DINO to ONNX: the network without denoising (inference has none), the encoder's top-k query
selection and the sigmoid top-k detections in the graph, dynamic batch, checked against
PyTorch's predict_batch."""

from __future__ import annotations

import onnx
import pytest

from tests.export.query_export import check_dynamic_batch_export, spread_query_detector

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    return spread_query_detector("dino_tiny_synth")


def test_dynamic_batch_export_matches_predict(model, tmp_path):
    result = check_dynamic_batch_export(model, tmp_path / "dino.onnx", num_dets=30)
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"GridSample", "TopK"} <= ops
