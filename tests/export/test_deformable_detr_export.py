"""Deformable DETR to ONNX: the network (GridSample for the deformable attention, the box
refinement, the two-stage encoder's top-k proposals) and the sigmoid top-k detections in the
graph, dynamic batch, checked against PyTorch's predict_batch.

Why it exports now (docs/export.md): one reference tensor goes through ``inverse_sigmoid``
twice (the decoder's refinement and the head), and MMDetection's form of it, after
onnxscript's optimizer, lost one of its Clip bounds; ``detcli.ops.logits`` writes it with no
clamp feeding another.
"""

from __future__ import annotations

import onnx
import pytest
import torch
from torch import nn

from detcli.ops.logits import inverse_sigmoid
from tests.export.query_export import check_dynamic_batch_export, spread_query_detector

ort = pytest.importorskip("onnxruntime")

# the tiny preset refines boxes; the two-stage variant at one encoder and one decoder layer
VARIANTS = {
    "refine": [],
    "refine_twostage": ["model.as_two_stage=true", "model.encoder.num_layers=1",
                        "model.decoder.num_layers=1"],
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dynamic_batch_export_matches_predict(variant, tmp_path):
    model = spread_query_detector("deformable_detr_tiny_synth", VARIANTS[variant])
    result = check_dynamic_batch_export(model, tmp_path / "deformable_detr.onnx", num_dets=30,
                                        label=f"{variant} ")
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert {"GridSample", "TopK"} <= ops


class TwiceLogit(nn.Module):
    """One probability tensor's logit taken twice, as the decoder and the head do."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = x.sigmoid()
        return inverse_sigmoid(probs) * 2, inverse_sigmoid(probs) + 3


def test_a_tensor_through_inverse_sigmoid_twice_exports(tmp_path):
    """The root cause in miniature: with MMDetection's three clamps this graph names a Clip
    bound that is not in the file (onnxruntime refuses it); no clamp feeding another, it loads
    and computes the logits (log 3 at 0.75, log(1 / eps) at 1, log(eps) at 0)."""
    sample = torch.randn(2, 1, 4)
    path = tmp_path / "twice.onnx"
    program = torch.onnx.export(TwiceLogit().eval(), (sample,), dynamo=True, input_names=["x"],
                                dynamic_shapes={"x": {0: torch.export.Dim("n", min=1, max=8)}},
                                opset_version=18, optimize=True, verbose=False)
    program.save(str(path))
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = torch.tensor([[[0.0, 1.0986123, 40.0, -40.0]]])  # sigmoid: 0.5, 0.75, 1, 0
    doubled, shifted = (torch.from_numpy(o) for o in session.run(None, {"x": logits.numpy()}))
    expected = torch.tensor([[[0.0, 1.0986123, 11.512925, -11.512925]]])  # log(1e5) = 11.5129
    torch.testing.assert_close(doubled, expected * 2, rtol=0, atol=1e-5)
    torch.testing.assert_close(shifted, expected + 3, rtol=0, atol=1e-5)
