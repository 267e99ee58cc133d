"""The config a checkpoint keeps: ``det predict CHECKPOINT INPUT...`` without a config file.

Every checkpoint ``det train`` writes holds the resolved config in ``meta.config`` (the TOML
text of the run's ``work_dir/config.toml``: every value written out, no ``extends``), so the
checkpoint alone is enough to rebuild its model and test pipeline. A file of MMDetection's
model zoo that det's table knows (``mmdet://NAME``, or the downloaded file) has the det preset
of its entry. Other MMDetection checkpoints (2.x keep their Python config text there, which is
never executed) and bare state dicts hold none det reads: for them the config file is needed.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from detcli.config.loader import LoadedConfig, load_config
from detcli.engine.checkpoint import read_checkpoint
from detcli.errors import CheckpointError
from detcli.zoo.mmdet import ZooEntry, entry_of_checkpoint

log = logging.getLogger(__name__)


def _det_config_text(path: str | os.PathLike, meta: Mapping[str, Any]) -> str | None:
    """det's ``meta.config`` (TOML text), or None when the file keeps none."""
    text = meta.get("config")
    if isinstance(text, str) and text.strip() and "det_version" in meta:
        return text
    return None


def _no_config(path: str | os.PathLike, meta: Mapping[str, Any],
               item: ZooEntry | None) -> CheckpointError:
    if item is not None:  # one of MMDetection's zoo files, of a model det has no preset for
        return CheckpointError(
            f"checkpoint {path} is MMDetection's {item.name}, which has no det preset",
            hint=f"det config import its MMDetection config (configs/{item.family}/{item.name}.py "
                 f"in MMDetection) and name it: det predict CONFIG {path} INPUT...")
    if isinstance(meta.get("config"), str):  # MMDetection 2.x: Python text
        return CheckpointError(
            f"checkpoint {path} is not det's: its meta.config is MMDetection's Python config, "
            "which det does not execute",
            hint=f"name a det config too (det config import translates MMDetection's): "
                 f"det predict CONFIG {path} INPUT...")
    return CheckpointError(
        f"checkpoint {path} keeps no config in its meta (det train writes one into every "
        "checkpoint; MMDetection's checkpoints and bare state dicts have none) and is not one of "
        "det's MMDetection zoo files (det zoo)",
        hint=f"name the config too: det predict CONFIG {path} INPUT...")


def config_from_checkpoint(path: str | os.PathLike,
                           overrides: Sequence[str] = ()) -> LoadedConfig:
    """The config of the checkpoint at ``path`` (a file or ``mmdet://NAME``), with
    ``overrides`` (``key=value``) applied and validated as a config file is.

    det's checkpoints keep theirs (loaded from a file named after the checkpoint); one of
    MMDetection's zoo files (:func:`~detcli.zoo.mmdet.entry_of_checkpoint`: ``mmdet://NAME``,
    its download's file name or ``meta.experiment_name``) gets its entry's det preset, whose
    class names give way to the file's ``meta`` classes where the model is built from it.
    Anything else is a CheckpointError saying which config to name.
    """
    meta = read_checkpoint(path)["meta"]
    text = _det_config_text(path, meta)
    if text is not None:
        with tempfile.TemporaryDirectory(prefix="det-ckpt-config-") as folder:
            file = Path(folder) / f"{Path(path).name}.config.toml"
            file.write_text(text, encoding="utf-8")
            return load_config(file, overrides)
    item = entry_of_checkpoint(path, meta)
    if item is None or item.preset is None:
        raise _no_config(path, meta, item)
    log.info("%s is mmdet://%s: its model is the det preset %s", path, item.name, item.preset)
    return load_config(item.preset, overrides)
