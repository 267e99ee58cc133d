"""DeltaXYWHBBoxCoder: written-out deltas, round trips, clamps and clipping."""

import math

import pytest
import torch
from pydantic import ValidationError

from detcli.registry import BBOX_CODERS
from detcli.task.coders import DeltaXYWHBBoxCoder, DeltaXYWHBBoxCoderConfig

PRIOR = torch.tensor([[0., 0., 10., 10.]])  # centre (5, 5), 10 x 10
TARGET = torch.tensor([[5., 5., 25., 15.]])  # centre (15, 10), 20 x 10
# dx = (15 - 5) / 10 = 1, dy = (10 - 5) / 10 = 0.5, dw = log(20 / 10), dh = log(10 / 10) = 0
DELTAS = torch.tensor([[1.0, 0.5, math.log(2.0), 0.0]])


def test_known_deltas():
    coder = DeltaXYWHBBoxCoder()
    assert torch.allclose(coder.encode(PRIOR, TARGET), DELTAS)
    assert torch.allclose(coder.decode(PRIOR, DELTAS), TARGET)


def test_means_and_stds():
    coder = DeltaXYWHBBoxCoder(target_means=[0.0, 0.5, 0.0, 0.0], target_stds=[0.1, 0.1, 0.2, 0.2])
    # (1 - 0) / 0.1 = 10, (0.5 - 0.5) / 0.1 = 0, log 2 / 0.2 = 3.465736, 0
    expected = torch.tensor([[10.0, 0.0, 3.465736, 0.0]])
    assert torch.allclose(coder.encode(PRIOR, TARGET), expected, atol=1e-5)
    assert torch.allclose(coder.decode(PRIOR, expected), TARGET, atol=1e-4)


def test_round_trip_batched_over_images():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(6, 2, generator=g) * 50
    priors = torch.cat([xy, xy + torch.rand(6, 2, generator=g) * 20 + 1], dim=1)  # (R, 4)
    xy = torch.rand(2, 6, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(2, 6, 2, generator=g) * 20 + 1], dim=2)  # (N, R, 4)
    coder = DeltaXYWHBBoxCoder(target_stds=[0.1, 0.1, 0.2, 0.2])
    deltas = coder.encode(priors.expand(2, -1, -1), boxes)  # (N, R, 4)
    decoded = coder.decode(priors, deltas)  # priors broadcast over images
    assert decoded.shape == (2, 6, 4)
    assert torch.allclose(decoded, boxes, atol=1e-4)


def test_wh_ratio_clamp():
    coder = DeltaXYWHBBoxCoder()
    # |log(16 / 1000)| = 4.135167, exp of it = 62.5: w <= 10 * 62.5, h >= 10 / 62.5 = 0.16
    box = coder.decode(PRIOR, torch.tensor([[0.0, 0.0, 10.0, -10.0]]))
    assert box[0].tolist() == pytest.approx([5 - 312.5, 5 - 0.08, 5 + 312.5, 5 + 0.08], rel=1e-5)


def test_center_clamp():
    coder = DeltaXYWHBBoxCoder(add_ctr_clamp=True, ctr_clamp=32)
    # centre shift 10 * 10 = 100 px -> 32; dw = -10 is not clamped from below with ctr clamp
    box = coder.decode(PRIOR, torch.tensor([[10.0, 0.0, -10.0, 0.0]]))
    w = 10 * math.exp(-10)  # 0.000454
    assert box[0].tolist() == pytest.approx([37 - w / 2, 0.0, 37 + w / 2, 10.0], abs=1e-5)
    box = coder.decode(PRIOR, torch.tensor([[0.0, 0.0, 10.0, 0.0]]))
    assert (box[0, 2] - box[0, 0]).item() == pytest.approx(625.0, rel=1e-5)  # max still applies


def test_max_shape_clipping():
    coder = DeltaXYWHBBoxCoder()
    deltas = torch.tensor([[1.0, 0.5, math.log(2.0), 0.0]])  # -> [5, 5, 25, 15]
    assert coder.decode(PRIOR, deltas, max_shape=(12, 20)).tolist() == [[5.0, 5.0, 20.0, 12.0]]
    batch = deltas.expand(2, 1, 4)  # (N, R, 4)
    shapes = torch.tensor([[12, 20], [100, 22]])  # (h, w) per image
    out = coder.decode(PRIOR, batch, max_shape=shapes)
    assert out.tolist() == [[[5.0, 5.0, 20.0, 12.0]], [[5.0, 5.0, 22.0, 15.0]]]
    unclipped = DeltaXYWHBBoxCoder(clip_border=False).decode(PRIOR, deltas, max_shape=(12, 20))
    assert unclipped.tolist() == [[5.0, 5.0, 25.0, 15.0]]


def test_mmdetection_docstring_example_and_half_inputs():
    rois = torch.tensor([[0., 0., 1., 1.], [0., 0., 1., 1.], [0., 0., 1., 1.], [5., 5., 5., 5.]])
    deltas = torch.tensor([[0., 0., 0., 0.], [1., 1., 1., 1.], [0., 0., 2., -1.],
                           [0.7, -1.9, -0.5, 0.3]])
    out = DeltaXYWHBBoxCoder().decode(rois.half(), deltas.half(), max_shape=(32, 32, 3))
    assert out.dtype == torch.float32
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.1409, 0.1409, 2.8591, 2.8591],
                             [0.0, 0.3161, 4.1945, 0.6839], [5.0, 5.0, 5.0, 5.0]])
    assert torch.allclose(out, expected, atol=2e-3)


def test_config():
    coder = BBOX_CODERS.build(DeltaXYWHBBoxCoderConfig(target_stds=[0.1, 0.1, 0.2, 0.2]))
    assert coder.stds == (0.1, 0.1, 0.2, 0.2) and coder.means == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValidationError):
        DeltaXYWHBBoxCoderConfig(target_stds=[0.1, 0.1, 0.2])
    with pytest.raises(ValidationError):
        DeltaXYWHBBoxCoderConfig(target_stds=[0.1, 0.1, 0.0, 0.2])


def test_traced_call_leaves_no_traced_constant_behind():
    """The means/stds cached for eager calls are never a trace's fake tensors (the exporter
    traces with FakeTensors; eager code after it must get real ones)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    coder = DeltaXYWHBBoxCoder(target_stds=(0.1, 0.1, 0.2, 0.2))
    priors = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    boxes = torch.tensor([[1.0, 1.0, 9.0, 12.0]])
    with FakeTensorMode() as mode:
        coder.encode(mode.from_tensor(priors), mode.from_tensor(boxes))
    deltas = coder.encode(priors, boxes)
    assert type(deltas) is torch.Tensor
    assert torch.allclose(coder.decode(priors, deltas), boxes)
