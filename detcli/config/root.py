"""The root of a det config: model, data, schedule and runtime, as MMDetection lays them out."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

import detcli.components  # noqa: F401  (registers every built-in component)
from detcli.config.schema import Maybe, Schema
from detcli.data.config import DataConfig
from detcli.engine.config import (
    AutoScaleLrConfig,
    CheckpointConfig,
    DistParams,
    EpochRunnerConfig,
    LogConfig,
    LrConfig,
    NumClassCheckHookConfig,
    OptimizerConfig,
    OptimizerHookConfig,
    RunnerConfig,
    SGDConfig,
)
from detcli.engine.runtime import RuntimeConfig
from detcli.engine.tta import TTAConfig
from detcli.evaluation.config import EvaluationConfig
from detcli.registry import DetectorConfig, HookConfig


class DetConfig(Schema):
    """A whole experiment. Only ``model``, ``data`` and ``lr_config`` have no default."""

    model: DetectorConfig
    data: DataConfig
    optimizer: OptimizerConfig = Field(default_factory=SGDConfig)
    optimizer_config: OptimizerHookConfig = Field(default_factory=OptimizerHookConfig)
    lr_config: LrConfig
    runner: RunnerConfig = Field(default_factory=EpochRunnerConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    checkpoint_config: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log_config: LogConfig = Field(default_factory=LogConfig)
    custom_hooks: list[HookConfig] = Field(default_factory=lambda: [NumClassCheckHookConfig()])
    dist_params: DistParams = Field(default_factory=DistParams)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    load_from: Maybe[str] = None
    resume_from: Maybe[str] = None
    workflow: list[tuple[Literal["train", "val"], int]] = Field(default_factory=lambda: [("train", 1)])
    seed: int = Field(0, ge=0)  # seeds python, numpy, torch and the data order
    deterministic: bool = False  # torch's deterministic kernels (slower)
    auto_scale_lr: AutoScaleLrConfig = Field(default_factory=AutoScaleLrConfig)
    sync_bn: bool = False  # SyncBatchNorm across processes in distributed CUDA training
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)  # channels_last, compile
    tta: TTAConfig = Field(default_factory=TTAConfig)  # how det test --tta merges the views
