"""``det config import``: an MMDetection Python config as a det TOML extending the closest preset.

The MMDetection file is read without executing it (:mod:`detcli.config.mmdet_reader`). What
is translated:

- ``model``: det's model schema uses MMDetection's names, so the dict carries over as it is,
  less ``data_preprocessor`` (det normalises in the pipeline) and anything det's schema
  refuses (each such key is listed with the schema's reason and left out);
- ``train_cfg.max_epochs`` (3.x) or ``runner.max_epochs`` (2.x) -> ``runner.max_epochs``;
- ``optim_wrapper.optimizer`` (3.x) or ``optimizer`` (2.x) -> ``optimizer``.

Every other top-level name (datasets, pipelines, schedules, hooks, runtime) is listed as not
translated. The closest preset is the one whose resolved model shares the most values with the
imported model (its type must match); the TOML extends it and writes only the values that
differ, so ``det config diff PRESET imported.toml`` shows what the MMDetection config changes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.config.emit import to_toml
from detcli.config.loader import load_config
from detcli.config.mmdet_reader import MMDetConfig, Unread, read_mmdet_config
from detcli.config.presets import preset_names
from detcli.errors import ConfigError

TRANSLATED = {"model", "train_cfg", "runner", "optim_wrapper", "optimizer"}
MAX_ROUNDS = 50  # schema passes, each removing the keys det refuses


@dataclass(frozen=True)
class Untranslated:
    """A key of the MMDetection config that is not in the det TOML, and why."""

    key: str
    reason: str


@dataclass
class ImportResult:
    """The det TOML (``text``), the preset it extends, and what was left out."""

    text: str
    preset: str
    shared: int  # model values equal to the preset's
    untranslated: list[Untranslated] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # the MMDetection files read


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively (TOML has arrays only)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _any_unread(value: Any) -> bool:
    if isinstance(value, Unread):
        return True
    if isinstance(value, dict):
        return any(_any_unread(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_any_unread(v) for v in value)
    return False


def _drop_unread(tree: dict, prefix: str, out: list[Untranslated]) -> dict:
    """``tree`` without :class:`Unread` values (each listed), and without None (TOML has none)."""
    kept: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Unread):
            out.append(Untranslated(name, f"not a literal det reads ({value.source} at "
                                          f"{value.where})"))
        elif isinstance(value, dict):
            kept[key] = _drop_unread(value, name, out)
        elif isinstance(value, list) and _any_unread(value):
            out.append(Untranslated(name, "holds a value det does not read"))
        elif value is not None:
            kept[key] = value
    return kept


def _translated(values: dict[str, Any], out: list[Untranslated]) -> dict[str, Any]:
    """The det tree of the MMDetection values det translates."""
    tree: dict[str, Any] = {}
    model = copy.deepcopy(values.get("model"))
    if not isinstance(model, dict):
        raise ConfigError("the MMDetection config has no model dict to import")
    if "data_preprocessor" in model:
        model.pop("data_preprocessor")
        out.append(Untranslated("model.data_preprocessor", "det normalises and pads in the "
                                "pipeline (Normalize, Pad): set them in the data section"))
    tree["model"] = model
    loop = values.get("train_cfg") if isinstance(values.get("train_cfg"), dict) else None
    runner = values.get("runner") if isinstance(values.get("runner"), dict) else None
    epochs = (loop or {}).get("max_epochs", (runner or {}).get("max_epochs"))
    if isinstance(epochs, int):
        tree["runner"] = {"max_epochs": epochs}
    wrapper = values.get("optim_wrapper")
    optimizer = (wrapper.get("optimizer") if isinstance(wrapper, dict) else None) \
        or values.get("optimizer")
    if isinstance(optimizer, dict):
        tree["optimizer"] = optimizer
    for name in sorted(set(values) - TRANSLATED):
        out.append(Untranslated(name, "not translated: det's data, schedule and runtime "
                                      "sections are written in det's own terms"))
    return _drop_unread(_plain(tree), "", out)


def _leaves(tree: dict) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}

    def walk(node: Any, path: tuple) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, path + (key,))
        else:
            out[path] = node
    walk(tree, ())
    return out


def closest_preset(model: dict) -> tuple[str, dict, int]:
    """(name, resolved tree, shared model values) of the preset whose model is closest."""
    wanted = _leaves(model)
    best: tuple[str, dict, int] | None = None
    for name in preset_names():
        resolved = load_config(name).resolved()
        if resolved.get("model", {}).get("type") != model.get("type"):
            continue
        theirs = _leaves(resolved["model"])
        shared = sum(1 for path, value in wanted.items() if theirs.get(path) == value)
        if best is None or shared > best[2]:
            best = (name, resolved, shared)
    if best is None:
        raise ConfigError(f"no det preset has a {model.get('type')!r} model to extend",
                          hint="det presets lists the families det has")
    return best


def _differences(ours: dict, preset: dict) -> dict:
    """The parts of ``ours`` whose values differ from (or are absent in) ``preset``."""
    out: dict[str, Any] = {}
    for key, value in ours.items():
        theirs = preset.get(key) if isinstance(preset, dict) else None
        if isinstance(value, dict) and isinstance(theirs, dict):
            inner = _differences(value, theirs)
            if inner:
                out[key] = inner
        elif value != theirs:
            out[key] = value
    return out


def _remove(tree: dict, dotted: str) -> bool:
    """Delete ``dotted`` (``model.bbox_head.foo``; list indices stop the walk) from ``tree``."""
    parts = dotted.split(".")
    node: Any = tree
    for part in parts[:-1]:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    if isinstance(node, dict) and parts[-1] in node:
        del node[parts[-1]]
        return True
    return False


def _validated(tree: dict, preset: str, folder: Path,
               out: list[Untranslated]) -> str:
    """The TOML text of ``tree`` over ``preset``, with every key det's schema refuses removed
    (listed with the schema's message)."""
    for _ in range(MAX_ROUNDS):
        text = to_toml({"extends": [preset], **tree})
        probe = folder / ".det-config-import-probe.toml"
        probe.write_text(text, encoding="utf-8")
        try:
            load_config(probe)
            return text
        except ConfigError as exc:
            removed = False
            for issue in exc.issues:
                path = issue.path
                while path and not _remove(tree, path):
                    path = path.rpartition(".")[0]  # a list element: drop the whole list
                if path:
                    out.append(Untranslated(issue.path, f"det refuses it: {issue.message}"))
                    removed = True
            if not removed:
                raise
        finally:
            probe.unlink(missing_ok=True)
    raise ConfigError("the imported config still does not validate after "
                      f"{MAX_ROUNDS} passes")


def import_mmdet_config(path: str | Path, configs_root: str | Path | None = None,
                        out_folder: str | Path | None = None) -> ImportResult:
    """``path`` (an MMDetection config) as a det TOML; ``out_folder`` is where the TOML will
    live (its relative paths resolve there; default: the current folder)."""
    read: MMDetConfig = read_mmdet_config(path, configs_root)
    untranslated: list[Untranslated] = []
    tree = _translated(read.values, untranslated)
    preset, resolved, shared = closest_preset(tree["model"])
    diff = _differences(tree, {k: resolved.get(k, {}) for k in tree})
    folder = Path(out_folder) if out_folder is not None else Path.cwd()
    text = _validated(diff, preset, folder, untranslated)
    header = [f"# imported from {Path(path).name} by det config import: extends {preset} "
              f"({shared} model values equal)"]
    header += [f"# not translated: {u.key}: {u.reason}" for u in untranslated]
    return ImportResult("\n".join(header) + "\n" + text, preset, shared, untranslated,
                        read.files)
