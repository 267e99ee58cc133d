"""Build a detector from its config: ``build_detector(cfg.model)``.

The config is a validated detector config (``load_config(path).cfg.model``) or the same tree as
a plain dict (``{"type": "RetinaNet", "backbone": {...}, ...}``), validated here first.
"""

from __future__ import annotations

from typing import Any, Mapping

from torch import nn

import detcli.models  # noqa: F401  (registers every model component)
import detcli.task  # noqa: F401  (registers anchors, assigners, samplers, coders)
from detcli.config.loader import validate_tree
from detcli.config.schema import Schema
from detcli.errors import ConfigError
from detcli.registry import DETECTORS


def build_detector(model_cfg: Schema | Mapping[str, Any]) -> nn.Module:
    """The detector ``model_cfg`` describes, with random weights.

    Call ``model.init_weights()`` afterwards to load the backbone's pretrained checkpoint
    (``backbone.init_cfg``), as a trainer does before training.
    """
    if isinstance(model_cfg, Mapping):
        kind = model_cfg.get("type")
        if not isinstance(kind, str):
            raise ConfigError(
                f"a model config needs a `type` (one of {', '.join(DETECTORS.names())})")
        model_cfg = validate_tree(dict(model_cfg), DETECTORS.config(kind))
    return DETECTORS.build(model_cfg)
