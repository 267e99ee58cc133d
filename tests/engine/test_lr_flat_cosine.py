"""FlatCosineAnnealing: RTMDet's schedule (linear warmup by iteration, flat, then cosine from
an epoch), by hand and against MMEngine's own schedulers (a committed fixture,
tools/mmengine_lr_fixture.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from detcli.engine.config import FlatCosineLrConfig
from detcli.engine.lr_schedule import LrScheduler

FIXTURE = Path(__file__).parent / "fixtures" / "mmengine_flat_cosine_lr.json"


def scheduler(cfg, max_iters, iters_per_epoch, by_epoch=True, lr=0.004):
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=lr)
    return LrScheduler(opt, cfg, max_iters=max_iters, iters_per_epoch=iters_per_epoch,
                       by_epoch=by_epoch)


def test_flat_then_cosine_by_hand():
    # 10 epochs of 4 iterations, cosine from epoch 5: B = 20, I - B = 20, floor 0.05 * lr_0
    s = scheduler(FlatCosineLrConfig(begin_epoch=5, min_lr_ratio=0.05), 40, 4, lr=0.01)
    assert s.lr_at(0.01, 0, 0) == 0.01
    assert s.lr_at(0.01, 19, 4) == 0.01
    assert s.lr_at(0.01, 20, 5) == pytest.approx(0.01)
    # i = 30: a quarter turn, (1 + cos(pi / 2)) / 2 = 0.5 -> 0.0005 + 0.0095 * 0.5
    assert s.lr_at(0.01, 30, 7) == pytest.approx(0.00525)
    # i = 25: (1 + cos(pi / 4)) / 2 = 0.853553...
    assert s.lr_at(0.01, 25, 6) == pytest.approx(0.0005 + 0.0095 * (1 + math.sqrt(0.5)) / 2)
    assert s.lr_at(0.01, 40, 10) == pytest.approx(0.0005)


def test_start_percent_rounds_epochs_as_mmcv():
    # 7 epochs x 0.5 = 3.5 -> round() = 4 epochs (banker's rounding as MMCV's python round)
    s = scheduler(FlatCosineLrConfig(start_percent=0.5, min_lr=0.0), 70, 10)
    assert s.cosine_begin == 40
    it = scheduler(FlatCosineLrConfig(start_percent=0.25, min_lr=0.0), 70, 10, by_epoch=False)
    assert it.cosine_begin == 18  # round(17.5) = 18 iterations


def test_matches_mmengine_rtmdet_param_scheduler():
    ref = json.loads(FIXTURE.read_text())
    lengths = ref["epoch_length"]
    cfg = FlatCosineLrConfig(warmup="linear", warmup_iters=ref["warmup_end"] - 1,
                             warmup_ratio=ref["start_factor"], begin_epoch=ref["max_epochs"] // 2,
                             min_lr_ratio=ref["eta_min_ratio"])
    total = ref["max_epochs"] * lengths
    s = scheduler(cfg, total, lengths, lr=ref["base_lr"])
    ours = []
    for i in range(total):
        s.step(i, i // lengths)
        ours.append(s.current_lr())
    assert ours == pytest.approx(ref["lr"], rel=1e-9, abs=1e-15)


def test_config_needs_one_floor():
    with pytest.raises(ValidationError, match="exactly one of min_lr"):
        FlatCosineLrConfig(begin_epoch=3)
