"""Cascade Mask R-CNN's ONNX graph: every box stage (as test_cascade_export.py checks), then the
final detections pooled once and segmented by every stage's mask head, their sigmoids
averaged -- ``mask_probs`` (N, M, 28, 28), as ``predict_batch`` gives it. On the
MMDetection-parity model of test_cascade_mask_rcnn_vs_mmdet.py: the wrapper in PyTorch, then
the exported file run by onnxruntime on new images (it checks the box stages too: the same
graph as test_cascade_export.py's, with the mask branch after it)."""

from __future__ import annotations

import torch

from detcli.export.two_stage_graph import TwoStageExportWrapper
from tests.export.test_two_stage_export import assert_same_detections, export_static
from tests.fixtures.mmdet.synthetic import synthetic_images
from tests.models.roi_heads.test_cascade_export import reference
from tests.models.roi_heads.test_cascade_mask_rcnn_vs_mmdet import (  # noqa: F401  (fixtures)
    BATCH,
    fixture,
    images_of,
    model,
)

SIZES = [(256, 320), (224, 288)]
MASK_TOL = 1e-4  # mask probabilities, the graph vs predict_batch


def test_wrapper_segments_with_every_stage_as_predict_batch(model, fixture):  # noqa: F811
    model.eval()
    images = images_of(fixture)
    with torch.no_grad():
        boxes, scores, labels, num_dets, probs = TwoStageExportWrapper(model)(
            images.tensor, torch.tensor(SIZES))
    ref = reference(model, images.tensor, SIZES)
    assert_same_detections(ref, boxes, scores, labels, num_dets, box_tol=1e-4)
    assert probs.shape == ref.mask_probs.shape == (2, 6, 28, 28)
    assert float((probs - ref.mask_probs).abs().max()) <= MASK_TOL
    # and so MMDetection's unscaled masks (its max_per_img 6 of our 6 slots)
    for i, theirs in enumerate(fixture["predictions"]["no_rescale"]):
        torch.testing.assert_close(probs[i], theirs["mask_probs"], rtol=0, atol=MASK_TOL)


def test_exported_file_gives_predict_batchs_masks_on_new_images(model, tmp_path):  # noqa: F811
    import onnxruntime as ort

    model.eval()
    wrapper = TwoStageExportWrapper(model).eval()
    example = synthetic_images(2, *BATCH, SIZES, seed=1)  # static (2, 3, 256, 320)
    path = tmp_path / "cascade_mask.onnx"
    graph = export_static(wrapper, example, path, wrapper.output_names)
    assert list(wrapper.output_names)[-1] == "mask_probs"
    # 3 box stages x 4 levels, and the mask branch's 4 levels once for every stage
    assert sum(n.op_type == "RoiAlign" for n in graph.node) == 3 * 4 + 4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = synthetic_images(2, *BATCH, [BATCH, BATCH], seed=7)  # new images, full size
    boxes, scores, labels, num_dets, probs = (torch.from_numpy(o) for o in
                                              session.run(None, {"images": batch.numpy()}))
    ref = reference(model, batch, [BATCH, BATCH])
    assert_same_detections(ref, boxes, scores, labels, num_dets)
    assert float(ref.mask_probs.std()) > 0.1  # spread-out probabilities, not all alike
    assert float((probs - ref.mask_probs).abs().max()) <= MASK_TOL
