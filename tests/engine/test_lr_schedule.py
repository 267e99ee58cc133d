"""LR schedules: MMCV's warmup, step, cosine and poly formulas, with numbers worked by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detcli.engine.config import CosineLrConfig, PolyLrConfig, StepLrConfig
from detcli.engine.lr_schedule import LrScheduler, step_exponent, warmup_factor


def scheduler(cfg, max_iters=100, iters_per_epoch=10, by_epoch=True, lrs=(0.02,)):
    params = [{"params": [nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    opt = torch.optim.SGD(params, lr=lrs[0])
    return LrScheduler(opt, cfg, max_iters=max_iters, iters_per_epoch=iters_per_epoch,
                       by_epoch=by_epoch)


def test_warmup_factors():
    # linear: 1 - (1 - i/W) * (1 - ratio); at i = 25 of 50 with ratio 0.001: 1 - 0.5 * 0.999
    assert warmup_factor("linear", 0, 50, 0.001) == pytest.approx(0.001)
    assert warmup_factor("linear", 25, 50, 0.001) == pytest.approx(0.5005)
    assert warmup_factor("linear", 50, 50, 0.001) == 1.0
    assert warmup_factor("constant", 49, 50, 0.001) == 0.001
    assert warmup_factor("exp", 25, 50, 0.001) == pytest.approx(0.001 ** 0.5)  # 0.0316...
    assert warmup_factor(None, 0, 50, 0.001) == 1.0


def test_step_counts_drops_by_epoch():
    assert [step_exponent([8, 11], e) for e in (0, 7, 8, 10, 11, 12)] == [0, 0, 1, 1, 2, 2]
    assert [step_exponent(3, e) for e in (0, 2, 3, 7)] == [0, 0, 1, 2]
    s = scheduler(StepLrConfig(step=[8, 11], warmup="linear", warmup_iters=50, warmup_ratio=0.001))
    assert s.lr_at(0.02, 0, 0) == pytest.approx(2e-5)
    assert s.lr_at(0.02, 25, 0) == pytest.approx(0.02 * 0.5005)
    assert s.lr_at(0.02, 79, 7) == pytest.approx(0.02)
    assert s.lr_at(0.02, 80, 8) == pytest.approx(0.002)
    assert s.lr_at(0.02, 110, 11) == pytest.approx(0.0002)
    floored = scheduler(StepLrConfig(step=[8, 11], min_lr=0.001))
    assert floored.lr_at(0.02, 110, 11) == pytest.approx(0.001)


def test_step_by_iteration_for_iter_based_runs():
    s = scheduler(StepLrConfig(step=[30, 60]), by_epoch=False)
    assert [s.lr_at(0.02, i, 0) for i in (29, 30, 60)] == pytest.approx([0.02, 0.002, 0.0002])


def test_warmup_by_epoch_counts_epochs():
    s = scheduler(StepLrConfig(step=[8], warmup="constant", warmup_iters=2, warmup_by_epoch=True,
                               warmup_ratio=0.1), iters_per_epoch=10)
    assert s.warmup_iters == 20
    assert s.lr_at(0.02, 19, 1) == pytest.approx(0.002)
    assert s.lr_at(0.02, 20, 2) == pytest.approx(0.02)


def test_cosine_and_poly_move_every_iteration():
    cos = scheduler(CosineLrConfig(min_lr_ratio=0.05), max_iters=100)  # end = 0.001
    assert cos.lr_at(0.02, 0, 0) == pytest.approx(0.02)
    assert cos.lr_at(0.02, 50, 5) == pytest.approx(0.0105)  # 0.001 + 0.019 * (1 + cos(pi/2)) / 2
    assert cos.lr_at(0.02, 100, 10) == pytest.approx(0.001)
    assert cos.lr_at(0.02, 51, 5) < cos.lr_at(0.02, 50, 5)  # within an epoch too
    absolute = scheduler(CosineLrConfig(min_lr=0.0), max_iters=100)
    assert absolute.lr_at(0.02, 25, 2) == pytest.approx(0.02 * (1 + 0.5 ** 0.5) / 2)
    poly = scheduler(PolyLrConfig(power=2.0, min_lr=0.0), max_iters=100)
    assert poly.lr_at(0.02, 50, 5) == pytest.approx(0.005)  # 0.02 * (1 - 0.5) ** 2
    poly_floor = scheduler(PolyLrConfig(power=1.0, min_lr=0.01), max_iters=100)
    assert poly_floor.lr_at(0.02, 50, 5) == pytest.approx(0.015)


def test_step_sets_every_group_from_its_own_initial_lr():
    s = scheduler(StepLrConfig(step=[1], warmup="linear", warmup_iters=10, warmup_ratio=0.1),
                  lrs=(0.02, 0.002))
    s.step(5, 0)  # warmup factor 1 - 0.5 * 0.9 = 0.55
    assert [g["lr"] for g in s.optimizer.param_groups] == pytest.approx([0.011, 0.0011])
    s.step(10, 1)
    assert [g["lr"] for g in s.optimizer.param_groups] == pytest.approx([0.002, 0.0002])
    assert s.current_lr() == pytest.approx(0.002)
    state = s.state_dict()
    assert state == {"policy": "step", "initial_lrs": [0.02, 0.002]}
