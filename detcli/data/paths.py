"""The one rule for the data paths a config names.

A data path is ``ann_file``, ``img_prefix`` or ``label_prefix`` of ``data.train``, ``data.val``
or ``data.test``. An absolute path (``~`` expanded) is used as it is. A relative path is
relative to the config file that sets it: when something exists there, the loader replaces the
value by that absolute path while it reads the file (:func:`anchor_data_paths`, so a base
config's paths stay relative to the base). When nothing exists next to the config file, the
value stays as written and is looked up in the current directory, which is how the presets'
``data/synth/...`` paths work from the repository root (``make demo``). A value given with
``--set`` is relative to the current directory.

An error about a missing data file adds :func:`lookup_note`, which says where a relative path
was looked up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

DATA_PATH_KEYS = ("ann_file", "img_prefix", "label_prefix")
SPLITS = ("train", "val", "test")


def anchor_data_paths(tree: dict[str, Any], config_dir: Path) -> None:
    """In one config file's own tree (before merging), make each relative data path that exists
    under ``config_dir`` absolute; leave every other value as it is."""
    data = tree.get("data")
    if not isinstance(data, dict):
        return
    for split in SPLITS:
        dataset = data.get(split)
        if not isinstance(dataset, dict):
            continue
        for key in DATA_PATH_KEYS:
            value = dataset.get(key)
            if isinstance(value, str) and value:
                dataset[key] = resolve_next_to(value, config_dir)


def resolve_next_to(value: str, config_dir: Path) -> str:
    """``value`` made absolute against ``config_dir`` when it exists there; else ``value``
    as written (absolute, or relative to the current directory), ``~`` expanded."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path) if value.startswith("~") else value
    candidate = config_dir / path
    if candidate.exists():
        return str(candidate.resolve())
    return value


def lookup_note(path: str | Path) -> str:
    """For a missing ``path``: where it was looked up, as a parenthesis for an error message;
    empty for an absolute path (the path says it all)."""
    if Path(path).is_absolute():
        return ""
    return (f" (looked up in the current directory {os.getcwd()}: a relative data path is "
            "relative to the config file that sets it when it exists there, else to the "
            "current directory)")
