"""Training hooks; importing this package registers the configurable ones in ``HOOKS``."""

from detcli.engine.context import Hook, HookList
from detcli.engine.hooks.checkpoint_hook import CheckpointHook
from detcli.engine.hooks.curves_hook import CurvesHook
from detcli.engine.hooks.early_stopping import EarlyStoppingHook
from detcli.engine.hooks.ema_hook import EMAHook
from detcli.engine.hooks.eval_hook import EvalHook
from detcli.engine.hooks.logger import LoggerHook, TextLoggerHook
from detcli.engine.hooks.num_class_check import NumClassCheckHook
from detcli.engine.hooks.pipeline_switch import PipelineSwitchHook
from detcli.engine.hooks.tensorboard_hook import TensorboardLoggerHook

__all__ = ["CheckpointHook", "CurvesHook", "EMAHook", "EarlyStoppingHook", "EvalHook", "Hook",
           "HookList", "LoggerHook", "NumClassCheckHook", "PipelineSwitchHook", "TensorboardLoggerHook",
           "TextLoggerHook"]
