"""DistancePointBBoxCoder: hand-computed distances, decode(encode(x)) == x, clipping, max_dis."""

from __future__ import annotations

import torch

from detcli.registry import BBOX_CODERS
from detcli.task.coders import DistancePointBBoxCoder, DistancePointBBoxCoderConfig

POINTS = torch.tensor([[10.0, 20.0], [5.0, 5.0]])
BOXES = torch.tensor([[4.0, 8.0, 30.0, 25.0], [0.0, 0.0, 40.0, 10.0]])
# left = x - x1, top = y - y1, right = x2 - x, bottom = y2 - y
DISTANCES = torch.tensor([[6.0, 12.0, 20.0, 5.0], [5.0, 5.0, 35.0, 5.0]])


def test_encode_by_hand_and_decode_inverts_it():
    coder = DistancePointBBoxCoder()
    assert torch.equal(coder.encode(POINTS, BOXES), DISTANCES)
    assert torch.equal(coder.decode(POINTS, DISTANCES), BOXES)


def test_round_trip_on_a_batch_broadcasts_points_over_images():
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(50, 2, generator=generator) * 100  # (R, 2)
    sizes = 1 + torch.rand(3, 50, 4, generator=generator) * 60  # (N, R, 4) all > 0
    boxes = torch.cat([points - sizes[..., :2], points + sizes[..., 2:]], dim=-1)  # contain points
    coder = DistancePointBBoxCoder()
    distances = coder.encode(points, boxes)  # (N, R, 4)
    assert distances.shape == (3, 50, 4) and bool((distances > 0).all())
    torch.testing.assert_close(coder.decode(points, distances), boxes)


def test_extra_point_columns_such_as_strides_are_ignored():
    with_strides = torch.cat([POINTS, torch.full((2, 2), 8.0)], dim=1)  # (R, 4)
    coder = DistancePointBBoxCoder()
    assert torch.equal(coder.encode(with_strides, BOXES), DISTANCES)
    assert torch.equal(coder.decode(with_strides, DISTANCES), BOXES)


def test_decode_clips_to_one_shape_or_one_per_image_unless_clip_border_is_off():
    coder = DistancePointBBoxCoder()
    clipped = coder.decode(POINTS, DISTANCES, max_shape=(20, 25))  # (h, w)
    assert clipped.tolist() == [[4, 8, 25, 20], [0, 0, 25, 10]]
    per_image = coder.decode(POINTS, DISTANCES[None].expand(2, -1, -1),
                             max_shape=torch.tensor([[20.0, 25.0], [9.0, 100.0]]))
    assert per_image[1].tolist() == [[4, 8, 30, 9], [0, 0, 40, 9]]
    unclipped = DistancePointBBoxCoder(clip_border=False).decode(POINTS, DISTANCES, (20, 25))
    assert torch.equal(unclipped, BOXES)


def test_encode_with_max_dis_clamps_to_zero_and_max_dis_minus_eps():
    coder = BBOX_CODERS.build(DistancePointBBoxCoderConfig())
    outside = torch.tensor([[50.0, 20.0]])  # right of the first box: right distance -20
    assert coder.encode(outside, BOXES[:1]).tolist() == [[46.0, 12.0, -20.0, 5.0]]
    clamped = coder.encode(outside, BOXES[:1], max_dis=10, eps=0.1)
    torch.testing.assert_close(clamped, torch.tensor([[9.9, 9.9, 0.0, 5.0]]))


def test_half_precision_inputs_compute_in_float32():
    coder = DistancePointBBoxCoder()
    assert coder.encode(POINTS.half(), BOXES.half()).dtype == torch.float32
    assert coder.decode(POINTS.half(), DISTANCES.half()).dtype == torch.float32
