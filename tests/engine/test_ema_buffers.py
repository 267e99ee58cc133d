"""ExpMomentumEMA with update_buffers (RTMDet's EMAHook): MMDetection's averages bit for bit (fixture
by tools/mmdet_ema_fixture.py); float buffers are averaged, integer
ones keep the first update's value, as MMEngine's BaseAveragedModel.update_parameters does."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from detcli.engine.ema import ModelEMA


def test_update_buffers_averages_floats_and_keeps_the_first_count():
    model = nn.BatchNorm1d(2)
    ema = ModelEMA(model, momentum=0.0002, gamma=2000, update_buffers=True)
    model.running_mean.fill_(1.0)
    model.num_batches_tracked.fill_(5)
    ema.update(model)  # the first update copies everything
    assert ema.module.num_batches_tracked.item() == 5
    model.running_mean.fill_(3.0)
    model.num_batches_tracked.fill_(9)
    ema.update(model)  # t = 1: m = (1 - 0.0002) exp(-2 / 2000) + 0.0002
    m = (1 - 0.0002) * math.exp(-2 / 2000) + 0.0002
    torch.testing.assert_close(ema.module.running_mean, torch.full((2,), 1.0 + m * 2.0))
    assert ema.module.num_batches_tracked.item() == 5


def test_without_update_buffers_every_buffer_is_copied():
    model = nn.BatchNorm1d(2)
    ema = ModelEMA(model, update_buffers=False)
    ema.update(model)
    model.running_mean.fill_(3.0)
    model.num_batches_tracked.fill_(9)
    ema.update(model)
    assert ema.module.num_batches_tracked.item() == 9
    torch.testing.assert_close(ema.module.running_mean, torch.full((2,), 3.0))


def test_exp_momentum_ema_equals_mmdetections_bit_for_bit():
    ref = torch.load(Path(__file__).parent / "fixtures" / "mmdet_exp_momentum_ema.pt",
                     weights_only=True)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    ema = None
    for state in ref["states"]:  # the weights before each of MMDetection's updates
        model.load_state_dict(state)
        if ema is None:
            ema = ModelEMA(model, momentum=ref["momentum"], gamma=ref["gamma"],
                           update_buffers=True)
        ema.update(model)
    ours = ema.module.state_dict()
    assert ours.keys() == ref["averaged"].keys()
    differ = [k for k in ours if not torch.equal(ours[k], ref["averaged"][k])]
    assert differ == []
