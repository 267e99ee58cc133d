"""The weight EMA: MMDetection's ExpMomentumEMA momentum and the lerp update, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detcli.engine.ema import ModelEMA


def net(value: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(1, 1, bias=False), nn.BatchNorm1d(1))
    with torch.no_grad():
        model[0].weight.fill_(value)
        model[1].running_mean.fill_(value)
    return model


def test_exp_momentum_formula():
    ema = ModelEMA(net(0.0), momentum=0.0002, gamma=2000)
    # (1 - 0.0002) * exp(-(1 + t) / 2000) + 0.0002
    assert ema.momentum_at(0) == pytest.approx(0.9998 * math.exp(-1 / 2000) + 0.0002)
    assert ema.momentum_at(1999) == pytest.approx(0.9998 * math.exp(-1.0) + 0.0002)
    assert ModelEMA(net(0.0), momentum=0.1, exp_momentum=False).momentum_at(5000) == 0.1


def test_first_update_copies_then_lerps_and_buffers_are_copied():
    model = net(3.0)
    ema = ModelEMA(net(0.0), momentum=0.5, exp_momentum=False)
    ema.update(model)  # the first update is a copy
    assert ema.module[0].weight.item() == 3.0 and ema.updates == 1
    with torch.no_grad():
        model[0].weight.fill_(5.0)
        model[1].running_mean.fill_(7.0)
    ema.update(model)  # 3 + 0.5 * (5 - 3)
    assert ema.module[0].weight.item() == 4.0
    assert ema.module[1].running_mean.item() == 7.0  # copied, not averaged
    assert not ema.module[0].weight.requires_grad


def test_update_buffers_averages_statistics_and_interval_skips():
    model = net(2.0)
    ema = ModelEMA(net(0.0), momentum=0.25, exp_momentum=False, update_buffers=True, interval=2)
    ema.update(model, step=0)  # (0 + 1) % 2 != 0: skipped
    assert ema.updates == 0
    ema.update(model, step=1)  # copy
    with torch.no_grad():
        model[1].running_mean.fill_(6.0)
    ema.update(model, step=3)  # 2 + 0.25 * (6 - 2)
    assert ema.module[1].running_mean.item() == 3.0
    assert ema.module[1].num_batches_tracked.item() == model[1].num_batches_tracked.item()


def test_state_round_trip():
    ema = ModelEMA(net(1.0))
    ema.updates = 12
    other = ModelEMA(net(0.0))
    other.load_state_dict(ema.state_dict(), ema.module.state_dict())
    assert other.updates == 12 and other.module[0].weight.item() == 1.0
