"""Box geometry: hand-computed overlaps, batching, torchvision agreement, conversions."""

import pytest
import torch
import torchvision

from detcli.ops.boxes import (
    aligned_box_iou,
    aligned_giou,
    box_area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    scale_boxes,
    xyxy_to_cxcywh,
)

# A (area 100), B (100, shifted by 5), C (400, contains A)
BOXES1 = torch.tensor([[0., 0., 10., 10.], [5., 5., 15., 15.], [0., 0., 20., 20.]])
# P (= A), Q (left half of A, area 50), R (touches A at a corner), S (far away)
BOXES2 = torch.tensor([[0., 0., 10., 10.], [0., 0., 5., 10.], [10., 10., 20., 20.],
                       [30., 30., 40., 40.]])

EXPECTED_IOU = torch.tensor([
    [1.0, 0.5, 0.0, 0.0],          # A: identical; 50/100; corner touch; apart
    [1 / 7, 0.0, 1 / 7, 0.0],      # B: 25/175; edge touch (zero width); 25/175; apart
    [0.25, 0.125, 0.25, 0.0],      # C: 100/400; 50/400; 100/400; apart
])
EXPECTED_IOF = torch.tensor([      # intersection / area of the row box
    [1.0, 0.5, 0.0, 0.0],
    [0.25, 0.0, 0.25, 0.0],
    [0.25, 0.125, 0.25, 0.0],
])


def test_box_area():
    assert torch.equal(box_area(BOXES1), torch.tensor([100., 100., 400.]))


def test_iou_matrix_written_out():
    assert torch.allclose(box_iou(BOXES1, BOXES2), EXPECTED_IOU, atol=1e-6)


def test_iof_matrix_written_out():
    assert torch.allclose(box_iou(BOXES1, BOXES2, mode="iof"), EXPECTED_IOF, atol=1e-6)
    # the other way round: Q lies inside A, so Q's IoF with A is 1
    assert box_iou(BOXES2, BOXES1, mode="iof")[1, 0] == pytest.approx(1.0)


def test_iou_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=g) * 100
    wh = torch.rand(30, 2, generator=g) * 50 + 1
    boxes = torch.cat([xy, xy + wh], dim=1)
    ours = box_iou(boxes[:12], boxes[12:])
    assert torch.allclose(ours, torchvision.ops.box_iou(boxes[:12], boxes[12:]), atol=1e-6)


def test_batched_equals_per_image_and_broadcasts():
    gt = torch.stack([BOXES1, BOXES1.flip(0) + 2.0])  # (2, 3, 4)
    priors = BOXES2  # (4, 4), shared by both images
    batched = box_iou(gt, priors)  # (2, 3, 4)
    assert batched.shape == (2, 3, 4)
    for n in range(2):
        assert torch.equal(batched[n], box_iou(gt[n], priors))
    per_image_priors = torch.stack([BOXES2, BOXES2])  # (2, 4, 4)
    assert torch.equal(box_iou(gt, per_image_priors), batched)


def test_float32_under_half_inputs_and_empty_cases():
    out = box_iou(BOXES1.half(), BOXES2.half())
    assert out.dtype == torch.float32
    assert torch.allclose(out, EXPECTED_IOU, atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert box_iou(BOXES1, BOXES2).dtype == torch.float32
    assert box_iou(torch.zeros(0, 4), BOXES2).shape == (0, 4)
    assert box_iou(BOXES1, torch.zeros(0, 4)).shape == (3, 0)
    degenerate = torch.tensor([[5., 5., 5., 5.]])
    assert box_iou(degenerate, degenerate).item() == 0.0  # eps, not NaN


def test_bad_mode_names_itself():
    with pytest.raises(ValueError, match="'giou'"):
        box_iou(BOXES1, BOXES2, mode="giou")


def test_aligned_iou_is_the_diagonal():
    pairs2 = BOXES2[:3]
    assert torch.allclose(aligned_box_iou(BOXES1, pairs2), torch.tensor([1.0, 0.0, 0.25]))
    assert torch.allclose(aligned_box_iou(BOXES1, pairs2), box_iou(BOXES1, pairs2).diagonal())


def test_aligned_giou_written_out_and_vs_torchvision():
    a = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 10.]])
    b = torch.tensor([[10., 10., 20., 20.], [0., 0., 5., 10.]])
    # corner touch: IoU 0, enclosing 400, union 200 -> -0.5; nested: IoU 0.5, enclosing = union
    assert torch.allclose(aligned_giou(a, b), torch.tensor([-0.5, 0.5]))
    tv = torchvision.ops.generalized_box_iou(a, b).diagonal()
    assert torch.allclose(aligned_giou(a, b), tv)


def test_format_conversions_are_inverse():
    box = torch.tensor([[0., 0., 10., 20.]])
    assert torch.equal(xyxy_to_cxcywh(box), torch.tensor([[5., 10., 10., 20.]]))
    assert torch.equal(cxcywh_to_xyxy(xyxy_to_cxcywh(BOXES2)), BOXES2)


def test_clip_one_shape_and_per_image():
    boxes = torch.tensor([[-5., -5., 30., 8.], [2., 3., 4., 50.]])
    clipped = clip_boxes(boxes, (10, 20, 3))  # (h, w, channels): x to [0, 20], y to [0, 10]
    assert torch.equal(clipped, torch.tensor([[0., 0., 20., 8.], [2., 3., 4., 10.]]))
    batch = torch.stack([boxes, boxes])  # (2, 2, 4)
    shapes = torch.tensor([[10, 20], [5, 3]])  # (h, w) per image
    out = clip_boxes(batch, shapes)
    assert torch.equal(out[0], clipped)
    assert torch.equal(out[1], torch.tensor([[0., 0., 3., 5.], [2., 3., 3., 5.]]))


def test_scale_boxes():
    box = torch.tensor([[1., 2., 3., 4.]])
    assert torch.equal(scale_boxes(box, 2.0), torch.tensor([[2., 4., 6., 8.]]))
    assert torch.equal(scale_boxes(box, (2.0, 0.5)), torch.tensor([[2., 1., 6., 2.]]))
    per_image = torch.tensor([[2., 1., 2., 1.], [1., 3., 1., 3.]])  # (N, 4)
    out = scale_boxes(torch.stack([box, box]), per_image[:, None, :])
    assert torch.equal(out, torch.tensor([[[2., 2., 6., 4.]], [[1., 6., 3., 12.]]]))
