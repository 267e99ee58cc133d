"""inverse_sigmoid: hand-computed logits, and the same values and gradients, bit for bit, as
MMDetection's three-clamp form (x.clamp(0, 1), then x.clamp(min=eps) over (1 - x).clamp(min=eps))
at every kind of input: inside (eps, 1 - eps), on the bounds, outside [0, 1], infinities, NaN,
and below 2^-25, where 1 - x rounds to 1 in float32."""

from __future__ import annotations

import math

import pytest
import torch

from detcli.ops.logits import inverse_sigmoid


def three_clamps(x: torch.Tensor, eps: float) -> torch.Tensor:
    """MMDetection 3.3's formula, written out as the reference."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def test_hand_computed_logits():
    p = torch.tensor([0.5, 0.75, 0.25, 1.0, 0.0, 2.0, -1.0])
    expected = [0.0, math.log(3), -math.log(3), math.log(1e5), math.log(1e-5), math.log(1e5),
                math.log(1e-5)]
    torch.testing.assert_close(inverse_sigmoid(p), torch.tensor(expected), rtol=0, atol=1e-6)
    # DINO's refinement and denoising eps: the logit saturates at log(999) = 6.9068
    assert inverse_sigmoid(torch.tensor([1.0]), 1e-3).item() == pytest.approx(math.log(1e3))
    assert inverse_sigmoid(torch.tensor([0.9995]), 1e-3).item() == pytest.approx(
        math.log(0.9995 / 1e-3), rel=1e-4)


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_values_and_gradients_equal_mmdetections_form(eps, dtype):
    special = torch.tensor([-math.inf, -3.0, -1e-7, -1e-8, 0.0, 1e-8, 2e-8, 1e-7, eps / 2, eps, 2 * eps, 0.3, 0.5,
                            1 - 2 * eps, 1 - eps, 1 - eps / 2, 1.0, 1 + 1e-6, 4.0, math.inf,
                            math.nan], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    grid = torch.cat([special, torch.rand(500, generator=gen, dtype=torch.float64) * 1.4 - 0.2])
    x = grid.to(dtype).requires_grad_()
    ref_x = grid.to(dtype).requires_grad_()
    out, ref = inverse_sigmoid(x, eps), three_clamps(ref_x, eps)
    assert torch.equal(out.isnan(), ref.isnan()) and int(out.isnan().sum()) == 1  # NaN stays NaN
    torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
    weights = torch.linspace(0.5, 1.5, len(grid), dtype=dtype)
    (out.nan_to_num() * weights).sum().backward()
    (ref.nan_to_num() * weights).sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=0, atol=0, equal_nan=True)
    seen = x.detach().double()  # the inputs as the dtype holds them
    inside = (seen > 2 * eps) & (seen < 1 - 2 * eps)
    assert (x.grad[inside] != 0).all() and (x.grad[(seen < 0) | (seen > 1)] == 0).all()
