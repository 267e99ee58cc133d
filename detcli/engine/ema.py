"""An exponential moving average (EMA) of a model's weights.

t: updates done before this one. Each update moves every floating-point parameter of the
average towards the model's by ``m_t``, all tensors in one fused call: MMDetection's
``ExpMomentumEMA`` computes ``ema * (1 - m_t) + w * m_t`` with
``m_t = (1 - momentum) * exp(-(1 + t) / gamma) + momentum`` (close to 1 at first, then
``momentum``), MMEngine's ``ExponentialMovingAverage`` ``ema.lerp(w, momentum)``; each is done
in its own arithmetic, so the averages are MMDetection's bit for bit. The first update (t = 0)
copies, as MMEngine's averaged models do. Buffers (BatchNorm statistics) are copied, or
averaged the same way with ``update_buffers`` (whose integer buffers, BatchNorm's
``num_batches_tracked``, then keep the first update's value, as in MMEngine). ``t`` is a
Python int, so an update never waits for the device.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from detcli.engine.checkpoint import unwrap_model


class ModelEMA:
    """The averaged copy ``module`` of a model, updated with :meth:`update`."""

    def __init__(self, model: nn.Module, *, momentum: float = 0.0002, gamma: int = 2000,
                 exp_momentum: bool = True, interval: int = 1, update_buffers: bool = False) -> None:
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.momentum = momentum
        self.gamma = gamma
        self.exp_momentum = exp_momentum
        self.interval = interval
        self.update_buffers = update_buffers
        self.updates = 0

    def momentum_at(self, t: int) -> float:
        """m_t (module docstring)."""
        if not self.exp_momentum:
            return self.momentum
        return (1.0 - self.momentum) * math.exp(-(1.0 + t) / self.gamma) + self.momentum

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor],
                                                 list[torch.Tensor], list[torch.Tensor]]:
        """(averaged, source) float tensors to interpolate, and (averaged, source) to copy."""
        model = unwrap_model(model)
        avg_params = list(self.module.parameters())
        src_params = [p.detach() for p in model.parameters()]
        lerp_avg = [a for a, s in zip(avg_params, src_params) if a.is_floating_point()]
        lerp_src = [s for a, s in zip(avg_params, src_params) if a.is_floating_point()]
        copy_avg, copy_src = [], []
        for a, s in zip(self.module.buffers(), model.buffers()):
            if self.update_buffers and a.is_floating_point():
                lerp_avg.append(a)
                lerp_src.append(s.detach())
            elif self.update_buffers and self.updates > 0:
                continue  # MMEngine: an integer buffer keeps the first update's copy
            else:
                copy_avg.append(a)
                copy_src.append(s.detach())
        return lerp_avg, lerp_src, copy_avg, copy_src

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """Average in ``model``'s current weights (every ``interval``-th call of ``step``)."""
        if step is not None and (step + 1) % self.interval:
            return
        weight = 1.0 if self.updates == 0 else self.momentum_at(self.updates)  # first: a copy
        lerp_avg, lerp_src, copy_avg, copy_src = self._pairs(model)
        if lerp_avg:
            src = [s.to(a.dtype) for a, s in zip(lerp_avg, lerp_src)]
            if self.exp_momentum:  # MMDetection's ExpMomentumEMA: ema * (1 - m) + w * m
                torch._foreach_mul_(lerp_avg, 1.0 - weight)
                torch._foreach_add_(lerp_avg, src, alpha=weight)
            else:  # MMEngine's ExponentialMovingAverage: ema.lerp_(w, m)
                torch._foreach_lerp_(lerp_avg, src, weight)
        for a, s in zip(copy_avg, copy_src):
            a.copy_(s)
        self.updates += 1

    @torch.no_grad()
    def reset(self, model: nn.Module) -> None:
        """Start the average again from ``model``'s weights (after loading other weights)."""
        self.module.load_state_dict(unwrap_model(model).state_dict())
        self.updates = 0

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the averaged weights (those are its state_dict)."""
        return {"updates": self.updates, "momentum": self.momentum, "gamma": self.gamma,
                "exp_momentum": self.exp_momentum}

    def load_state_dict(self, state: dict[str, Any], averaged: dict[str, torch.Tensor]) -> None:
        """Restore the update count and the averaged weights ``averaged``."""
        self.module.load_state_dict(averaged)
        self.updates = int(state.get("updates", 0))
