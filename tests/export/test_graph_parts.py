"""The pieces of the export graph with hand-computed numbers: the NMS op against ONNX's own
reference implementation, anchors built from symbolic sizes, clipping to the input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detcli.export.graph import clip_to_input, level_priors
from detcli.export.nms_op import onnx_nms
from detcli.task.prior_generators.anchor_generator import AnchorGenerator

# One image, four boxes. IoU(b0, b1) = 81 / 119 = 0.68; IoU(b0, b2) = 50 / 150 = 0.33;
# IoU(b1, b2) = 54 / 146 = 0.37; b3 overlaps nothing.
BOXES = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0],
                       [5.0, 0.0, 15.0, 10.0], [20.0, 20.0, 30.0, 30.0]]])  # (1, 4, 4)
SCORES = torch.tensor([[[0.9, 0.8, 0.7, 0.04],  # class 0
                        [0.0, 0.85, 0.0, 0.6]]])  # class 1; (1, 2, 4)


def onnx_reference(boxes: torch.Tensor, scores: torch.Tensor, max_out: int, iou: float,
                   score: float) -> np.ndarray:
    """ONNX's reference evaluator running one NonMaxSuppression node."""
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "score"],
                            ["selected"], center_point_box=0)
    graph = helper.make_graph(
        [node], "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("max", TensorProto.INT64, None),
         helper.make_tensor_value_info("iou", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    (selected,) = ReferenceEvaluator(model).run(None, {
        "boxes": boxes.numpy(), "scores": scores.numpy(),
        "max": np.array([max_out], np.int64), "iou": np.array([iou], np.float32),
        "score": np.array([score], np.float32)})
    return selected


@pytest.mark.parametrize("max_out, iou, expected", [
    # class 0: b0 kept, b1 suppressed by b0 (0.68 > 0.5), b2 kept (0.33), b3 under 0.05;
    # class 1: b1 and b3 kept (classes never suppress each other)
    (10, 0.5, [[0, 0, 0], [0, 0, 2], [0, 1, 1], [0, 1, 3]]),
    (10, 0.3, [[0, 0, 0], [0, 1, 1], [0, 1, 3]]),  # b2 now suppressed too (0.33 > 0.3)
    (1, 0.5, [[0, 0, 0], [0, 1, 1]]),  # one box per (image, class)
])
def test_nms_op_keeps_what_onnx_keeps(max_out, iou, expected):
    selected = onnx_nms(BOXES, SCORES, max_out, iou, 0.05)
    assert selected.tolist() == expected
    assert selected.tolist() == onnx_reference(BOXES, SCORES, max_out, iou, 0.05).tolist()


def test_nms_op_batches_images_and_orders_by_image_class_score():
    boxes = torch.cat([BOXES, BOXES.flip(1)])  # (2, 4, 4): image 1 lists the boxes backwards
    scores = torch.cat([SCORES, SCORES.flip(2)])  # (2, 2, 4)
    expected = [[0, 0, 0], [0, 0, 2], [0, 1, 1], [0, 1, 3],
                [1, 0, 3], [1, 0, 1], [1, 1, 2], [1, 1, 0]]
    assert onnx_nms(boxes, scores, 10, 0.5, 0.05).tolist() == expected
    assert onnx_reference(boxes, scores, 10, 0.5, 0.05).tolist() == expected


def test_nms_op_score_threshold_is_strict():
    selected = onnx_nms(BOXES, SCORES, 10, 0.5, 0.6)  # class 1's b3 scores exactly 0.6
    assert selected.tolist() == [[0, 0, 0], [0, 0, 2], [0, 1, 1]]


def test_the_graphs_anchors_hand_computed():
    # one 8 x 8 anchor centred on each cell's top-left corner: base [-4, -4, 4, 4]
    generator = AnchorGenerator(strides=[8], ratios=[1.0], scales=[1.0])
    anchors = level_priors(generator, 0, torch.zeros(1, 1, 2, 3))  # 2 rows, 3 columns
    assert anchors.tolist() == [[-4, -4, 4, 4], [4, -4, 12, 4], [12, -4, 20, 4],
                                [-4, 4, 4, 12], [4, 4, 12, 12], [12, 4, 20, 12]]
    # a (stride_w, stride_h) = (16, 8) level shifts x by 16
    wide = AnchorGenerator(strides=[(16, 8)], ratios=[1.0], scales=[1.0])
    assert wide.single_level_grid_priors((1, 2), 0).tolist() == [
        [-4, -4, 4, 4], [12, -4, 20, 4]]


def test_the_graphs_anchors_match_the_anchor_generators_cached_ones():
    generator = AnchorGenerator(strides=[8, 16, 32], ratios=[0.5, 1.0, 2.0],
                                octave_base_scale=4, scales_per_octave=3)
    sizes = [(7, 5), (4, 3), (2, 2)]
    for level, (priors, size) in enumerate(zip(generator.grid_priors(sizes), sizes)):
        assert torch.equal(generator.single_level_grid_priors(size, level), priors)


def test_clip_to_input_clamps_x_to_width_and_y_to_height():
    boxes = torch.tensor([[[-3.0, 5.0, 300.0, 90.0], [10.0, -1.0, 20.0, 30.0]]])  # (1, 2, 4)
    assert clip_to_input(boxes, 64, 256).tolist() == [[[0, 5, 256, 64], [10, 0, 20, 30]]]
