"""The loss meter: means between log points, and the first non-finite term and iteration."""

from __future__ import annotations

import torch

from detcli.engine.meters import LossMeter


def t(x: float) -> torch.Tensor:
    return torch.tensor(x)


def test_means_since_the_last_flush():
    meter = LossMeter()
    meter.add({"loss_cls": t(1.0), "loss_bbox": t(0.5)}, 1)
    meter.add({"loss_cls": t(3.0), "loss_bbox": t(1.5)}, 2)
    flushed = meter.flush()
    assert flushed.means == {"loss_cls": 2.0, "loss_bbox": 1.0}
    assert flushed.count == 2 and flushed.bad_term is None
    assert len(meter) == 0 and meter.flush().means == {}
    meter.add({"loss_cls": t(4.0)}, 3)
    assert meter.flush().means == {"loss_cls": 4.0}


def test_first_non_finite_term_and_iteration():
    meter = LossMeter()
    meter.add({"loss_cls": t(1.0), "loss_bbox": t(1.0)}, 7)
    meter.add({"loss_cls": t(1.0), "loss_bbox": t(float("inf"))}, 8)
    meter.add({"loss_cls": t(float("nan")), "loss_bbox": t(float("nan"))}, 9)
    flushed = meter.flush()
    assert (flushed.bad_term, flushed.bad_iter) == ("loss_bbox", 8)
    assert flushed.means["loss_cls"] == 2.0 / 3  # non-finite values add nothing
    meter.add({"loss_cls": t(1.0)}, 10)
    assert meter.flush().bad_term is None  # a flush resets the record
