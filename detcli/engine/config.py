"""Schedule and runtime settings: optimizer, lr_config, runner, checkpoints, logs, hooks.

(``[evaluation]`` is :mod:`detcli.evaluation.config`.)

Key paths and defaults are MMDetection 2.x's (``optimizer.lr``, ``lr_config.step``,
``runner.max_epochs``, ``checkpoint_config.interval``). The engine (``det train``) gives these
settings their behaviour; this module only validates them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from detcli.config.schema import Maybe, Schema
from detcli.registry import HOOKS, HookConfig


class CustomKey(Schema):
    """Per-parameter-name-prefix multipliers (``paramwise_cfg.custom_keys``)."""

    lr_mult: float = Field(1.0, ge=0)
    decay_mult: float = Field(1.0, ge=0)


class ParamwiseConfig(Schema):
    bias_lr_mult: Maybe[float] = Field(None, ge=0)  # lr multiplier of biases (not norm layers')
    norm_decay_mult: Maybe[float] = Field(None, ge=0)  # 0 = no weight decay on norm layers
    bias_decay_mult: Maybe[float] = Field(None, ge=0)  # 0 = no weight decay on (non-norm) biases
    custom_keys: dict[str, CustomKey] = Field(default_factory=dict)


class SGDConfig(Schema):
    type: Literal["SGD"] = "SGD"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0001, ge=0)
    nesterov: bool = False
    paramwise_cfg: Maybe[ParamwiseConfig] = None


class AdamWConfig(Schema):
    type: Literal["AdamW"] = "AdamW"
    lr: float = Field(0.0001, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    paramwise_cfg: Maybe[ParamwiseConfig] = None


OptimizerConfig = Annotated[Union[SGDConfig, AdamWConfig], Field(discriminator="type")]


class GradClipConfig(Schema):
    max_norm: float = Field(gt=0)
    norm_type: float = Field(2.0, gt=0)


class OptimizerHookConfig(Schema):
    grad_clip: Maybe[GradClipConfig] = None


class _WarmupMixin(Schema):
    warmup: Maybe[Literal["linear", "constant", "exp"]] = None
    warmup_iters: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.1, gt=0, le=1)
    warmup_by_epoch: bool = False

    @model_validator(mode="after")
    def _warmup_needs_iters(self):
        if self.warmup is not None and self.warmup_iters == 0:
            raise ValueError(f"warmup = {self.warmup!r} needs warmup_iters > 0")
        return self


class StepLrConfig(_WarmupMixin):
    policy: Literal["step"] = "step"
    step: Union[int, list[int]] = Field(description="epochs (or iterations) at which lr *= gamma")
    gamma: float = Field(0.1, gt=0)
    min_lr: Maybe[float] = None

    @model_validator(mode="after")
    def _steps_increase(self):
        steps = [self.step] if isinstance(self.step, int) else self.step
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError(f"step must be strictly increasing, got {steps}")
        return self


class CosineLrConfig(_WarmupMixin):
    policy: Literal["CosineAnnealing"] = "CosineAnnealing"
    min_lr: Maybe[float] = None
    min_lr_ratio: Maybe[float] = None

    @model_validator(mode="after")
    def _one_floor(self):
        if (self.min_lr is None) == (self.min_lr_ratio is None):
            raise ValueError("set exactly one of min_lr and min_lr_ratio")
        return self


class FlatCosineLrConfig(_WarmupMixin):
    """lr_0 until the cosine starts, then cosine annealing to the floor at the run's end.

    The start is epoch ``begin_epoch`` when set (MMDetection 3's
    ``CosineAnnealingLR(begin=max_epochs // 2, end=max_epochs, by_epoch=True,
    convert_to_iter_based=True)``, RTMDet's), else ``start_percent`` of the run (MMCV's
    ``FlatCosineAnnealing``: round(max_epochs * start_percent) epochs, or of max_iters for an
    IterBasedRunner).
    """

    policy: Literal["FlatCosineAnnealing"] = "FlatCosineAnnealing"
    start_percent: float = Field(0.75, ge=0, lt=1)
    begin_epoch: Maybe[int] = Field(None, ge=0)  # replaces start_percent when set
    min_lr: Maybe[float] = None
    min_lr_ratio: Maybe[float] = None

    @model_validator(mode="after")
    def _one_floor(self):
        if (self.min_lr is None) == (self.min_lr_ratio is None):
            raise ValueError("set exactly one of min_lr and min_lr_ratio")
        return self


class PolyLrConfig(_WarmupMixin):
    policy: Literal["poly"] = "poly"
    power: float = Field(1.0, gt=0)
    min_lr: float = Field(0.0, ge=0)


LrConfig = Annotated[Union[StepLrConfig, CosineLrConfig, FlatCosineLrConfig, PolyLrConfig],
                     Field(discriminator="policy")]


class EpochRunnerConfig(Schema):
    type: Literal["EpochBasedRunner"] = "EpochBasedRunner"
    max_epochs: int = Field(12, ge=1)


class IterRunnerConfig(Schema):
    type: Literal["IterBasedRunner"] = "IterBasedRunner"
    max_iters: int = Field(ge=1)


RunnerConfig = Annotated[Union[EpochRunnerConfig, IterRunnerConfig], Field(discriminator="type")]


class CheckpointConfig(Schema):
    interval: int = Field(1, ge=1)
    max_keep_ckpts: int = Field(-1, ge=-1)  # -1 keeps every checkpoint


class TextLoggerHookConfig(Schema):
    type: Literal["TextLoggerHook"] = "TextLoggerHook"


class TensorboardLoggerHookConfig(Schema):
    """Every log record's numbers as TensorBoard scalars (needs the ``tensorboard`` extra)."""

    type: Literal["TensorboardLoggerHook"] = "TensorboardLoggerHook"
    log_dir: str = "tf_logs"  # the event files' folder; a relative path is in the work dir


class NumClassCheckHookConfig(Schema):
    """Checks that the dataset's class count equals the head's ``num_classes`` before training."""

    type: Literal["NumClassCheckHook"] = "NumClassCheckHook"


class EMAHookConfig(Schema):
    """An exponential moving average of the weights, used for evaluation and saved.

    Each update moves the average towards the weights by ``m``: ``ema += m * (w - ema)``.
    ``ExpMomentumEMA`` (MMDetection's) starts with ``m`` near 1 and decays it to ``momentum``
    over about ``gamma`` updates; ``ExponentialMovingAverage`` uses ``momentum`` throughout.
    """

    type: Literal["EMAHook"] = "EMAHook"
    ema_type: Literal["ExpMomentumEMA", "ExponentialMovingAverage"] = "ExpMomentumEMA"
    momentum: float = Field(0.0002, gt=0, lt=1)
    gamma: int = Field(2000, gt=0)  # ExpMomentumEMA only
    interval: int = Field(1, ge=1)  # update every `interval` iterations
    update_buffers: bool = False  # average BN statistics too (else copy them)


class EarlyStoppingHookConfig(Schema):
    """Stop when the monitored evaluation metric has not improved for ``patience`` evaluations."""

    type: Literal["EarlyStoppingHook"] = "EarlyStoppingHook"
    monitor: str = "bbox_mAP"
    rule: Maybe[Literal["greater", "less"]] = None  # None: greater (less for names with "loss")
    min_delta: float = Field(0.0, ge=0)  # a change smaller than this is no improvement
    patience: int = Field(5, ge=1)
    stopping_threshold: Maybe[float] = None  # stop as soon as the metric reaches this


HOOKS.add_config(TextLoggerHookConfig)
HOOKS.add_config(TensorboardLoggerHookConfig)
HOOKS.add_config(NumClassCheckHookConfig)
HOOKS.add_config(EMAHookConfig)
HOOKS.add_config(EarlyStoppingHookConfig)


class LogConfig(Schema):
    interval: int = Field(50, ge=1)
    hooks: list[HookConfig] = Field(default_factory=lambda: [TextLoggerHookConfig()])
    curves: bool = True  # draw curves.png in the work dir at each evaluation and at the end


class DistParams(Schema):
    backend: Literal["nccl", "gloo"] = "nccl"  # a CPU run uses gloo whatever this says
    # seconds a collective waits for the other processes before the run fails (a stalled or
    # dead rank); long enough for rank 0's checkpoint writes and a large evaluation
    timeout: float = Field(1800.0, gt=0)


class AutoScaleLrConfig(Schema):
    """Scale ``optimizer.lr`` by (GPUs x samples_per_gpu) / ``base_batch_size`` when enabled."""

    enable: bool = False
    base_batch_size: int = Field(16, ge=1)  # the total batch the lr was tuned for
