"""Schedule and runtime settings: optimizer, lr_config, runner, evaluation, checkpoints, logs, hooks.

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
    norm_decay_mult: Maybe[float] = Field(None, ge=0)  # 0 = no weight decay on norm layers
    bias_decay_mult: Maybe[float] = Field(None, ge=0)  # 0 = no weight decay on biases
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


class PolyLrConfig(_WarmupMixin):
    policy: Literal["poly"] = "poly"
    power: float = Field(1.0, gt=0)
    min_lr: float = Field(0.0, ge=0)


LrConfig = Annotated[Union[StepLrConfig, CosineLrConfig, PolyLrConfig], Field(discriminator="policy")]


class EpochRunnerConfig(Schema):
    type: Literal["EpochBasedRunner"] = "EpochBasedRunner"
    max_epochs: int = Field(12, ge=1)


class IterRunnerConfig(Schema):
    type: Literal["IterBasedRunner"] = "IterBasedRunner"
    max_iters: int = Field(ge=1)


RunnerConfig = Annotated[Union[EpochRunnerConfig, IterRunnerConfig], Field(discriminator="type")]


class EvaluationConfig(Schema):
    interval: int = Field(1, ge=1)
    metric: Union[Literal["bbox"], list[Literal["bbox"]]] = "bbox"
    save_best: Maybe[str] = "auto"  # the metric that picks the `best` checkpoint; auto = the first


class CheckpointConfig(Schema):
    interval: int = Field(1, ge=1)
    max_keep_ckpts: int = Field(-1, ge=-1)  # -1 keeps every checkpoint


class TextLoggerHookConfig(Schema):
    type: Literal["TextLoggerHook"] = "TextLoggerHook"


class NumClassCheckHookConfig(Schema):
    """Checks that the dataset's class count equals the head's ``num_classes`` before training."""

    type: Literal["NumClassCheckHook"] = "NumClassCheckHook"


HOOKS.add_config(TextLoggerHookConfig)
HOOKS.add_config(NumClassCheckHookConfig)


class LogConfig(Schema):
    interval: int = Field(50, ge=1)
    hooks: list[HookConfig] = Field(default_factory=lambda: [TextLoggerHookConfig()])


class DistParams(Schema):
    backend: Literal["nccl", "gloo"] = "nccl"
