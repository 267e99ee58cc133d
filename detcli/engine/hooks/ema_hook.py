"""``EMAHook``: keep an exponential moving average of the weights for evaluation and saving.

The average (:class:`~detcli.engine.ema.ModelEMA`) is made in ``before_run`` from the
model's weights as they are then (after ``--init-from`` or ``--resume`` loaded them) and, on
resume, takes the checkpoint's averaged weights and update count. It is updated after every
``interval``-th iteration, before anything evaluates or saves; the evaluation hook evaluates
it instead of the raw model, and checkpoints store it as their ``state_dict``.
"""

from __future__ import annotations

from detcli.engine.config import EMAHookConfig
from detcli.engine.ema import ModelEMA
from detcli.engine.context import ABOVE_NORMAL, Hook, TrainContext
from detcli.registry import HOOKS


@HOOKS.register(EMAHookConfig)
class EMAHook(Hook):
    """Sets ``ctx.ema`` and updates it every ``interval`` iterations."""

    priority = ABOVE_NORMAL

    def __init__(self, *, ema_type: str = "ExpMomentumEMA", momentum: float = 0.0002,
                 gamma: int = 2000, interval: int = 1, update_buffers: bool = False) -> None:
        self.kwargs = dict(momentum=momentum, gamma=gamma, exp_momentum=ema_type == "ExpMomentumEMA",
                           interval=interval, update_buffers=update_buffers)

    def before_run(self, ctx: TrainContext) -> None:
        ema = ModelEMA(ctx.model, **self.kwargs)
        if ctx.resumed_ema is not None:  # (state, averaged weights) from --resume
            ema.load_state_dict(*ctx.resumed_ema)
        ctx.ema = ema

    def after_iter(self, ctx: TrainContext) -> None:
        assert ctx.ema is not None  # made in before_run
        ctx.ema.update(ctx.model, step=ctx.state.iter - 1)
