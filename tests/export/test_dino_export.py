"""DINO to ONNX: the network without denoising (inference has none), the encoder's top-k query
selection and the sigmoid top-k detections in the graph, dynamic batch, checked against
PyTorch's predict_batch."""

from __future__ import annotations

import onnx
import pytest
import torch

from detcli.config.loader import load_config
from detcli.export.onnx import ExportOptions, export_onnx
from detcli.export.runtime import OnnxModel
from detcli.models.build import build_detector
from detcli.structures.batch import ImageBatch

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    detector = build_detector(load_config("dino_tiny_synth", []).cfg.model)
    detector.init_weights()
    with torch.no_grad():  # scores that differ across classes and queries
        for branch in detector.bbox_head.cls_branches:
            branch.weight.normal_(0.0, 0.5)
        for branch in detector.bbox_head.reg_branches:
            branch[-1].weight.normal_(0.0, 0.05)
    return detector.eval()


def test_dynamic_batch_export_matches_predict(model, tmp_path):
    result = export_onnx(model, tmp_path / "dino.onnx", input_size=(128, 160),
                         options=ExportOptions(dynamic_batch=True))
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"GridSample", "TopK"} <= ops
    runner = OnnxModel(result.path)
    for num, seed in ((1, 1), (3, 2)):
        batch = torch.randn(num, 3, 128, 160, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            ref = model.predict_batch(ImageBatch.from_tensor(batch), rescale=False)
        boxes, scores, labels, num_dets = runner.run(batch)
        assert num_dets.tolist() == [30] * num == ref.num_dets.tolist()
        assert torch.equal(labels, ref.labels)
        torch.testing.assert_close(boxes, ref.boxes, rtol=0, atol=1e-3)
        torch.testing.assert_close(scores, ref.scores, rtol=0, atol=1e-5)
        print(f"N={num}: boxes within {float((boxes - ref.boxes).abs().max()):.2e} px, "
              f"scores within {float((scores - ref.scores).abs().max()):.2e}")
