"""``PipelineSwitchHook``: a second training pipeline from an epoch on (RTMDet's last epochs).

MMDetection's hook replaces the dataset's pipeline in ``before_train_epoch`` once
``epoch >= switch_epoch`` and restarts persistent loader workers so they see it. Here the
training dataset holds both pipelines (:meth:`DetDataset.switch_pipeline`, installed in
``before_run``, before any loader worker starts) and the loader calls its ``set_epoch`` with
each sample's epoch in the process that loads it (:class:`~detcli.data.loader.SeededSamples`):
samples of epochs ``switch_epoch`` and later (0-based, as MMDetection's ``runner.epoch``: with
``switch_epoch = 280`` of 300, the last 20 epochs) go through ``switch_pipeline``. No worker is
restarted, persistent or not, and a run resumed after the switch epoch uses the second
pipeline from its first sample, because the choice is a function of the epoch alone.
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol, Sequence

from pydantic import Field

from detcli.config.schema import Schema
from detcli.engine.context import NORMAL, Hook, TrainContext
from detcli.registry import HOOKS, TransformConfig

log = logging.getLogger(__name__)


class StagedDataset(Protocol):
    """A training set that chooses its pipeline by epoch (DetDataset, SkipBadImages)."""

    def switch_pipeline(self, from_epoch: int, pipeline: Sequence[Any]) -> None: ...


class PipelineSwitchHookConfig(Schema):
    """From epoch ``switch_epoch`` (0-based: epochs done) on, train on ``switch_pipeline``."""

    type: Literal["PipelineSwitchHook"] = "PipelineSwitchHook"
    switch_epoch: int = Field(ge=0)
    switch_pipeline: list[TransformConfig] = Field(min_length=1)


@HOOKS.register(PipelineSwitchHookConfig)
class PipelineSwitchHook(Hook):
    """Installs the second pipeline on the training set and logs the switch."""

    priority = NORMAL

    def __init__(self, *, switch_epoch: int, switch_pipeline: Sequence[Any]) -> None:
        self.switch_epoch = switch_epoch
        self.switch_pipeline = list(switch_pipeline)

    def __repr__(self) -> str:
        return (f"PipelineSwitchHook(switch_epoch={self.switch_epoch}, "
                f"{len(self.switch_pipeline)} steps)")

    def before_run(self, ctx: TrainContext) -> None:
        dataset: StagedDataset = ctx.train_dataset  # type: ignore[assignment]
        dataset.switch_pipeline(self.switch_epoch, self.switch_pipeline)
        state = ctx.state
        if state.by_epoch and self.switch_epoch >= state.max_epochs:
            log.warning("PipelineSwitchHook.switch_epoch = %d: the run has %d epochs, so the "
                        "second pipeline is never used", self.switch_epoch, state.max_epochs)
        elif state.epoch >= self.switch_epoch:
            log.info("resumed in epoch %d, after PipelineSwitchHook.switch_epoch = %d: training "
                     "on the second pipeline", state.epoch + 1, self.switch_epoch)

    def before_epoch(self, ctx: TrainContext) -> None:
        if ctx.state.epoch == self.switch_epoch and ctx.state.inner_iter == 0:
            log.info("epoch %d: switching to the second training pipeline "
                     "(PipelineSwitchHook.switch_epoch = %d)", ctx.state.epoch + 1,
                     self.switch_epoch)
