"""Cascade R-CNN's ONNX graph: every box stage inside it (each pooling the previous stage's
clipped regression, the logits averaged, the last stage's deltas decoded), checked against
PyTorch's predict_batch -- on the MMDetection-parity model of test_cascade_vs_mmdet.py, so the
graph is also MMDetection's cascade. The wrapper in PyTorch, then the exported file run by
onnxruntime on new images."""

from __future__ import annotations

import pytest
import torch

from detcli.export.two_stage_graph import TwoStageExportWrapper
from detcli.structures.batch import ImageBatch
from tests.export.test_two_stage_export import assert_same_detections, export_static
from tests.fixtures.mmdet.synthetic import synthetic_images
from tests.models.roi_heads.test_cascade_vs_mmdet import (  # noqa: F401  (fixtures)
    BATCH,
    fixture,
    inputs,
    model,
)

SIZES = [(256, 320), (224, 288)]


def reference(model, batch: torch.Tensor, img_shapes):  # noqa: F811
    images = ImageBatch(tensor=batch, img_shapes=img_shapes, ori_shapes=img_shapes,
                        scale_factors=torch.ones(batch.shape[0], 4))
    with torch.no_grad():
        return model.predict_batch(images, rescale=False)


def test_wrapper_runs_every_stage_as_predict_batch(model, fixture):  # noqa: F811
    model.eval()
    images, _ = inputs(fixture)
    sizes = torch.tensor(SIZES)
    with torch.no_grad():
        boxes, scores, labels, num_dets = TwoStageExportWrapper(model)(images.tensor, sizes)
    ref = reference(model, images.tensor, SIZES)
    assert_same_detections(ref, boxes, scores, labels, num_dets, box_tol=1e-4)
    # and so MMDetection's unscaled detections (its max_per_img 20 of our 20 slots)
    for i, theirs in enumerate(fixture["predictions"]["no_rescale"]):
        count = len(theirs["scores"])
        torch.testing.assert_close(boxes[i, :count], theirs["boxes"], rtol=0, atol=1e-3)


def test_exported_file_gives_predict_batch_on_new_images(model, tmp_path):  # noqa: F811
    import onnxruntime as ort

    model.eval()
    wrapper = TwoStageExportWrapper(model).eval()
    example = synthetic_images(2, *BATCH, SIZES, seed=1)  # static (2, 3, 256, 320)
    path = tmp_path / "cascade.onnx"
    graph = export_static(wrapper, example, path, wrapper.output_names)
    assert sum(n.op_type == "NonMaxSuppression" for n in graph.node) == 2  # RPN, final
    assert sum(n.op_type == "RoiAlign" for n in graph.node) == 3 * 4  # 3 stages x 4 levels
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = synthetic_images(2, *BATCH, [BATCH, BATCH], seed=7)  # new images, full size
    boxes, scores, labels, num_dets = (torch.from_numpy(o) for o in
                                       session.run(None, {"images": batch.numpy()}))
    ref = reference(model, batch, [BATCH, BATCH])
    assert_same_detections(ref, boxes, scores, labels, num_dets)
