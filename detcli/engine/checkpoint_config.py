"""The config a checkpoint keeps: ``det predict CHECKPOINT INPUT...`` without a config file.

Every checkpoint ``det train`` writes holds the resolved config in ``meta.config`` (the TOML
text of the run's ``work_dir/config.toml``: every value written out, no ``extends``), so the
checkpoint alone is enough to rebuild its model and test pipeline. MMDetection's checkpoints
(2.x keep their Python config text there, which is never executed) and bare state dicts hold
none det reads: for them the config file is still needed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from detcli.config.loader import LoadedConfig, load_config
from detcli.engine.checkpoint import read_checkpoint
from detcli.errors import CheckpointError


def config_text_of(path: str | os.PathLike) -> str:
    """``meta.config`` of the checkpoint at ``path``; CheckpointError when it keeps none."""
    meta = read_checkpoint(path)["meta"]
    text = meta.get("config")
    if isinstance(text, str) and "det_version" not in meta:  # MMDetection 2.x: Python text
        raise CheckpointError(
            f"checkpoint {path} is not det's: its meta.config is MMDetection's Python config, "
            "which det does not execute",
            hint=f"name a det config too: det predict CONFIG {path} INPUT...")
    if not isinstance(text, str) or not text.strip():
        raise CheckpointError(
            f"checkpoint {path} keeps no config in its meta (det train writes one into every "
            "checkpoint; MMDetection's checkpoints and bare state dicts have none)",
            hint=f"name the config too: det predict CONFIG {path} INPUT...")
    return text


def config_from_checkpoint(path: str | os.PathLike,
                           overrides: Sequence[str] = ()) -> LoadedConfig:
    """The config kept in the checkpoint at ``path``, with ``overrides`` (``key=value``) applied
    and validated as a config file is; its source is named after the checkpoint."""
    text = config_text_of(path)
    with tempfile.TemporaryDirectory(prefix="det-ckpt-config-") as folder:
        file = Path(folder) / f"{Path(path).name}.config.toml"
        file.write_text(text, encoding="utf-8")
        return load_config(file, overrides)
