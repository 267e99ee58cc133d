"""DETR to ONNX: the network and its top-k in the graph, dynamic batch, checked against
PyTorch's predict_batch."""

from __future__ import annotations

import pytest
import torch

from detcli.config.loader import load_config
from detcli.errors import ExportError
from detcli.export.onnx import ExportOptions, export_onnx
from detcli.export.runtime import OnnxModel
from detcli.models.build import build_detector
from detcli.structures.batch import ImageBatch

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def detr():
    torch.manual_seed(0)
    return build_detector(load_config("detr_tiny_synth", []).cfg.model).eval()


def test_dynamic_batch_export_matches_predict(detr, tmp_path):
    result = export_onnx(detr, tmp_path / "detr.onnx", input_size=(128, 160),
                         options=ExportOptions(dynamic_batch=True))
    runner = OnnxModel(result.path)
    for num, seed in ((1, 1), (3, 2)):
        batch = torch.randn(num, 3, 128, 160, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = detr.predict_batch(ImageBatch.from_tensor(batch), rescale=False)
        boxes, scores, labels, num_dets = runner.run(batch)
        assert num_dets.tolist() == [20] * num == ref.num_dets.tolist()
        assert torch.equal(labels, ref.labels)
        torch.testing.assert_close(boxes, ref.boxes, rtol=0, atol=1e-3)
        torch.testing.assert_close(scores, ref.scores, rtol=0, atol=1e-5)


def test_no_nms_export_is_refused(detr, tmp_path):
    with pytest.raises(ExportError, match="has no NMS to leave out"):
        export_onnx(detr, tmp_path / "x.onnx", input_size=(128, 160),
                    options=ExportOptions(nms=False))
