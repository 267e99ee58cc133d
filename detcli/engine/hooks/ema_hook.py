"""``EMAHook``: keep an exponential moving average of the weights for evaluation and saving.

The average (:class:`~detcli.engine.ema.ModelEMA`) is made in ``before_run`` from the
model's weights as they are then (after ``--init-from`` or ``--resume`` loaded them) and, on
resume, takes the checkpoint's averaged weights and update count. It is updated after every
``interval``-th iteration, before anything evaluates or saves; the evaluation hook evaluates
it instead of the raw model, and checkpoints store it as their ``state_dict``.
"""

from __future__ import annotations

from typing import Any

from detcli.engine.config import EMAHookConfig
from detcli.engine.ema import ModelEMA
from detcli.engine.hooks.base import ABOVE_NORMAL, Hook
from detcli.registry import HOOKS


@HOOKS.register(EMAHookConfig)
class EMAHook(Hook):
    """Builds ``trainer.ema`` and updates it every ``interval`` iterations."""

    priority = ABOVE_NORMAL

    def __init__(self, *, ema_type: str = "ExpMomentumEMA", momentum: float = 0.0002,
                 gamma: int = 2000, interval: int = 1, update_buffers: bool = False) -> None:
        self.kwargs = dict(momentum=momentum, gamma=gamma, exp_momentum=ema_type == "ExpMomentumEMA",
                           interval=interval, update_buffers=update_buffers)

    @classmethod
    def from_config(cls, cfg: EMAHookConfig, **derived: Any) -> EMAHook:
        return cls(**cfg.model_dump(exclude={"type"}), **derived)

    def before_run(self, trainer: Any) -> None:
        trainer.ema = ModelEMA(trainer.model, **self.kwargs)
        resumed = trainer.resumed_ema  # (state, averaged weights) from --resume, or None
        if resumed is not None:
            trainer.ema.load_state_dict(*resumed)

    def after_iter(self, trainer: Any) -> None:
        trainer.ema.update(trainer.model, step=trainer.state.iter - 1)
