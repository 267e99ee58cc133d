"""weight_reduce_loss: MMDetection's weight, reduction and avg_factor rules."""

import pytest
import torch

from detcli.models.losses import weight_reduce_loss

LOSS = torch.tensor([1.0, 2.0, 3.0, 6.0])


def test_reductions_without_weight():
    torch.testing.assert_close(weight_reduce_loss(LOSS, reduction="none"), LOSS)
    assert weight_reduce_loss(LOSS, reduction="sum").item() == 12.0
    assert weight_reduce_loss(LOSS, reduction="mean").item() == 3.0


def test_weight_multiplies_elementwise_before_reducing():
    weight = torch.tensor([1.0, 0.0, 2.0, 0.5])  # -> 1, 0, 6, 3
    assert weight_reduce_loss(LOSS, weight, "sum").item() == 10.0
    assert weight_reduce_loss(LOSS, weight, "mean").item() == 2.5  # the mean still divides by 4


def test_avg_factor_replaces_the_element_count():
    assert weight_reduce_loss(LOSS, reduction="mean", avg_factor=3).item() == pytest.approx(4.0)
    torch.testing.assert_close(weight_reduce_loss(LOSS, reduction="none", avg_factor=3), LOSS)
    assert weight_reduce_loss(torch.zeros(3), reduction="mean", avg_factor=0).item() == 0.0
    with pytest.raises(ValueError, match="avg_factor cannot be used"):
        weight_reduce_loss(LOSS, reduction="sum", avg_factor=3)


def test_empty_mean_is_zero_not_nan():
    empty = torch.zeros(0, requires_grad=True)
    value = weight_reduce_loss(empty, reduction="mean")
    assert value.item() == 0.0 and value.grad_fn is not None


def test_unknown_reduction_names_the_choices():
    with pytest.raises(ValueError, match="reduction 'avg' must be one of none, mean, sum"):
        weight_reduce_loss(LOSS, reduction="avg")
