"""Learning-rate schedules, set before every iteration: warmup, then step, cosine or poly.

i: iterations done before the one about to run (0-based), e: epochs done, I: total iterations
of the run, lr_0: a parameter group's ``initial_lr`` (``optimizer.lr`` x its ``lr_mult``).

The regular lr (MMCV's formulas):

* ``step``: lr_0 * gamma ** (number of ``step`` entries <= e), counted in epochs with
  EpochBasedRunner and in iterations with IterBasedRunner; floored at ``min_lr``. A single
  integer ``step = s`` means every s.
* ``CosineAnnealing``: end + (lr_0 - end) * (1 + cos(pi * i / I)) / 2, with end = ``min_lr``
  or lr_0 * ``min_lr_ratio``.
* ``poly``: (lr_0 - min_lr) * (1 - i / I) ** power + min_lr.
* ``FlatCosineAnnealing``: lr_0 for i < B, then end + (lr_0 - end) * (1 + cos(pi * (i - B) /
  (I - B))) / 2, with B = ``begin_epoch`` x iterations per epoch, or the run's
  ``start_percent`` (round(max_epochs * start_percent) epochs; round(I * start_percent) for
  IterBasedRunner). MMEngine's CosineAnnealingLR(begin, end = the run's end, T_max = end -
  begin, convert_to_iter_based) after a LinearLR warmup is this, value for value.

Cosine and poly move every iteration (MMCV moves them once per epoch unless ``by_epoch`` is
off; per iteration is smoother and the same at epoch starts). During the first W =
``warmup_iters`` iterations (``warmup_iters`` epochs with ``warmup_by_epoch``), the regular lr
is multiplied by: ``linear`` 1 - (1 - i / W) * (1 - ratio); ``constant`` ratio;
``exp`` ratio ** (1 - i / W). MMEngine's ``LinearLR(start_factor=ratio, begin=0, end=E)``
reaches its end factor at iteration E - 1: it is ``linear`` warmup with W = E - 1. The schedule is a pure function of (i, e), so its state is only
the groups' ``initial_lr``, and a resumed run gets the same lr at the same iteration.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from detcli.engine.config import CosineLrConfig, FlatCosineLrConfig, PolyLrConfig, StepLrConfig

LrConfig = StepLrConfig | CosineLrConfig | FlatCosineLrConfig | PolyLrConfig


def step_exponent(step: int | list[int], progress: int) -> int:
    """How many lr drops have happened at ``progress`` (epochs or iterations done)."""
    if isinstance(step, int):
        return progress // step
    return sum(1 for s in step if progress >= s)


def warmup_factor(kind: str | None, i: int, warmup_iters: int, ratio: float) -> float:
    """The multiplier of the regular lr at iteration ``i`` (1 once warmup is over)."""
    if kind is None or i >= warmup_iters:
        return 1.0
    if kind == "constant":
        return ratio
    if kind == "linear":
        return 1.0 - (1.0 - i / warmup_iters) * (1.0 - ratio)
    if kind == "exp":
        return ratio ** (1.0 - i / warmup_iters)
    raise ValueError(f"unknown warmup {kind!r}; expected linear, constant or exp")


def flat_cosine_begin(cfg: FlatCosineLrConfig, max_iters: int, iters_per_epoch: int,
                      by_epoch: bool) -> int:
    """B, the first iteration of the cosine part (module docstring)."""
    if cfg.begin_epoch is not None:
        return cfg.begin_epoch * iters_per_epoch
    if by_epoch:
        return round(max_iters // max(iters_per_epoch, 1) * cfg.start_percent) * iters_per_epoch
    return round(max_iters * cfg.start_percent)


class LrScheduler:
    """Sets every parameter group's lr for iteration ``i`` of epoch ``e`` (module docstring)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: LrConfig, *, max_iters: int,
                 iters_per_epoch: int, by_epoch: bool = True) -> None:
        self.optimizer = optimizer
        self.cfg = cfg
        self.max_iters = max(1, max_iters)
        self.by_epoch = by_epoch
        self.warmup_iters = cfg.warmup_iters * (iters_per_epoch if cfg.warmup_by_epoch else 1)
        self.cosine_begin = (flat_cosine_begin(cfg, self.max_iters, iters_per_epoch, by_epoch)
                             if isinstance(cfg, FlatCosineLrConfig) else 0)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])

    def regular_lr(self, lr_0: float, i: int, e: int) -> float:
        """The lr without warmup for a group starting at ``lr_0``."""
        cfg = self.cfg
        if isinstance(cfg, StepLrConfig):
            lr = lr_0 * cfg.gamma ** step_exponent(cfg.step, e if self.by_epoch else i)
            return max(lr, cfg.min_lr) if cfg.min_lr is not None else lr
        progress = min(i / self.max_iters, 1.0)
        if isinstance(cfg, CosineLrConfig):
            end = cfg.min_lr if cfg.min_lr is not None else lr_0 * cfg.min_lr_ratio
            return end + (lr_0 - end) * (1.0 + math.cos(math.pi * progress)) / 2.0
        if isinstance(cfg, FlatCosineLrConfig):
            end = cfg.min_lr if cfg.min_lr is not None else lr_0 * cfg.min_lr_ratio
            begin = self.cosine_begin
            if i < begin:
                return lr_0
            frac = min((i - begin) / max(self.max_iters - begin, 1), 1.0)
            return end + (lr_0 - end) * (1.0 + math.cos(math.pi * frac)) / 2.0
        if isinstance(cfg, PolyLrConfig):
            return (lr_0 - cfg.min_lr) * (1.0 - progress) ** cfg.power + cfg.min_lr
        raise ValueError(f"unknown lr policy {getattr(cfg, 'policy', cfg)!r}")

    def lr_at(self, lr_0: float, i: int, e: int) -> float:
        """The lr of a group starting at ``lr_0`` for iteration ``i`` in epoch ``e``."""
        factor = warmup_factor(self.cfg.warmup, i, self.warmup_iters, self.cfg.warmup_ratio)
        return self.regular_lr(lr_0, i, e) * factor

    def step(self, i: int, e: int) -> None:
        """Set every group's lr for the iteration about to run."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(group["initial_lr"], i, e)

    def current_lr(self) -> float:
        """The first group's lr (what the logs show)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.cfg.policy,
                "initial_lrs": [g["initial_lr"] for g in self.optimizer.param_groups]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        lrs = state.get("initial_lrs", [])
        if len(lrs) == len(self.optimizer.param_groups):
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["initial_lr"] = lr
