"""Task modules of detectors: prior generators, assigners, samplers, box coders, post-processing.

Importing this package registers every component it defines.
"""

from detcli.task import assigners, coders, prior_generators, samplers  # noqa: F401  (registration)
from detcli.task.postprocess import (
    DenseTestConfig,
    NMSConfig,
    NMSSettings,
    SoftNMSConfig,
    multiclass_nms,
)
from detcli.task.train_cfg import DenseTrainConfig

__all__ = [
    "DenseTestConfig", "DenseTrainConfig", "NMSConfig", "NMSSettings", "SoftNMSConfig",
    "multiclass_nms",
]
