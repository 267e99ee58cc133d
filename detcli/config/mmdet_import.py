"""``det config import``: an MMDetection Python config as a det TOML extending the closest preset.

The MMDetection file is read without executing it (:mod:`detcli.config.mmdet_reader`). What
is translated:

- ``model``: det's model schema uses MMDetection's names, so the dict carries over as it is,
  less ``data_preprocessor`` (det normalises and pads in the pipeline: its mean, std and pad
  go into the translated pipelines) and anything det's schema refuses (each such key is listed
  with the schema's reason and left out);
- the data and schedule sections (:mod:`detcli.config.mmdet_sections`): datasets, pipelines
  where every transform maps, optimizer, gradient clipping, ``param_scheduler`` as
  ``lr_config``, epochs, validation interval and metric, checkpoint and log intervals;
- ``tta_model`` and ``tta_pipeline`` (:mod:`detcli.config.mmdet_tta`): ``[tta]``, and the
  test pipeline's ``MultiScaleFlipAug`` when the views start with the test pipeline;
- ``custom_hooks`` (:mod:`detcli.config.mmdet_hooks`): ``EMAHook``, ``PipelineSwitchHook``
  (its pipeline translated as the training pipeline is), ``EarlyStoppingHook`` and
  ``NumClassCheckHook`` as det's hooks of those names.

Every other key is listed with the reason it is not translated. The closest preset is chosen
among those with the same model type by, in order: the most values (model, data and schedule
leaves) equal to the import's, the import's read as det's schema reads them (defaults filled
in: a backbone's ``plugins`` written without MMCV's defaults equal the list of a preset that
has them); the fewest values the TOML has to write over it; the nearest
numbers among the values that differ (the sum of ``|a - b| / max(|a|, |b|)``: ResNet-18 is
nearer ResNet-50 than ResNet-101); the preset with the fewest values of its own (the simpler
one); its name. The TOML extends it and writes only the values that differ, so
``det config diff PRESET imported.toml`` shows what the MMDetection config changes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.config.emit import to_toml
from detcli.config.loader import load_config
from detcli.config.mmdet_hooks import translate_custom_hooks
from detcli.config.mmdet_reader import MMDetConfig, Unread, read_mmdet_config
from detcli.config.mmdet_sections import Untranslated, lists_for_tuples, translate_data, translate_schedule
from detcli.config.mmdet_tta import translate_tta_model, translate_tta_pipeline
from detcli.config.presets import preset_names
from detcli.errors import ConfigError

TRANSLATED = {"model", "data", "train_dataloader", "val_dataloader", "test_dataloader",
              "optim_wrapper", "optimizer", "optimizer_config", "lr_config", "param_scheduler",
              "train_cfg", "runner", "val_evaluator", "checkpoint_config", "evaluation",
              "log_config", "auto_scale_lr", "default_hooks", "custom_hooks", "tta_model",
              "tta_pipeline"}
NOT_TRANSLATED = {  # why a top-level name of an MMDetection config has no det counterpart
    "default_scope": "MMEngine's registry scope; det has one registry",
    "env_cfg": "MMEngine's process settings; det's are [dist_params] and the launcher",
    "launcher": "det train picks the launcher (torchrun) itself",
    "log_level": "det logs at INFO (--debug for more)",
    "log_processor": "det logs each window's mean (log_config.interval)",
    "vis_backends": "det writes curves.png; TensorBoard is log_config's TensorboardLoggerHook",
    "visualizer": "det draws with det test --show-dir / det viz",
    "load_from": "det train --init-from (or load_from in det's config)",
    "resume": "det train --resume",
    "val_cfg": "MMEngine's loop type; det has one validation loop",
    "test_cfg": "MMEngine's loop type; det test is det's",
    "test_evaluator": "det test scores with evaluation.metric (from val_evaluator)",
    "work_dir": "det train --work-dir",
}
VARIABLE = "a variable of the config: read where the translated keys use it"
MAX_ROUNDS = 50  # schema passes, each removing the keys det refuses


@dataclass
class ImportResult:
    """The det TOML (``text``), the preset it extends, and what was left out."""

    text: str
    preset: str
    shared: int  # values (model, data, schedule) equal to the preset's
    untranslated: list[Untranslated] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # the MMDetection files read


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
    preprocessor = model.pop("data_preprocessor", None)
    if isinstance(preprocessor, dict):
        out.append(Untranslated("model.data_preprocessor", "det normalises and pads in the "
                                "pipeline: its mean, std and pad_size_divisor are the "
                                "translated pipelines' Normalize and Pad"))
    tree["model"] = model
    data = translate_data(values, preprocessor if isinstance(preprocessor, dict) else {}, out)
    test = data.get("test") if isinstance(data, dict) else None
    tta_pipeline = translate_tta_pipeline(
        values, test.get("pipeline") if isinstance(test, dict) else None,
        preprocessor if isinstance(preprocessor, dict) else {}, out)
    if tta_pipeline is not None:
        data["test"]["pipeline"] = tta_pipeline  # its first view is the test pipeline
    tta = translate_tta_model(values, out)
    if tta is not None:
        tree["tta"] = tta
    if data:
        tree["data"] = data
    tree.update(translate_schedule(values, out))
    custom_hooks = translate_custom_hooks(
        values, preprocessor if isinstance(preprocessor, dict) else {}, out)
    if custom_hooks is not None:
        tree["custom_hooks"] = custom_hooks
    hooks = values.get("default_hooks") if isinstance(values.get("default_hooks"), dict) else {}
    for name in sorted(set(hooks) - {"checkpoint", "logger"}):
        out.append(Untranslated(f"default_hooks.{name}", "built into det's trainer (timing, "
                                "lr schedule, seeds) or done by det viz / det test"))
    for name in sorted(set(values) - TRANSLATED):
        out.append(Untranslated(name, NOT_TRANSLATED.get(name, VARIABLE)))
    return _drop_unread(lists_for_tuples(tree), "", out)


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


def _distance(ours: dict[tuple, Any], theirs: dict[tuple, Any]) -> float:
    """How far the numbers of ``ours`` that differ from ``theirs`` are: sum of relative gaps."""
    gap = 0.0
    for path, value in ours.items():
        other = theirs.get(path)
        numbers = [v for v in (value, other)
                   if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == 2 and value != other:
            gap += abs(value - other) / max(abs(value), abs(other))
    return gap


def _at(tree: Any, path: tuple) -> tuple[bool, Any]:
    """(found, value) of ``path`` in nested dicts ``tree``."""
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return False, None
        tree = tree[key]
    return True, tree


def _normalised(tree: dict, preset: str, folder: Path) -> dict:
    """``tree`` with each leaf as det's schema reads it (its defaults filled in: a plugin list
    written without MMCV's defaults becomes the list a preset resolves to), from ``tree``
    loaded over ``preset`` (a preset with its model type); a leaf the schema refuses, or all of
    them when the tree does not load, keeps the written value."""
    probe = copy.deepcopy(tree)
    try:
        resolved = _validated(probe, preset, folder, []).resolved()
    except ConfigError:
        return tree
    out: dict[tuple, Any] = {}
    for path, value in _leaves(tree).items():
        found, normal = _at(resolved, path)
        out[path] = normal if found and _at(probe, path)[0] else value
    nested: dict[str, Any] = {}
    for path, value in out.items():
        node = nested
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return nested


def closest_preset(tree: dict, folder: Path | None = None) -> tuple[str, dict, int]:
    """(name, resolved tree, shared values) of the preset closest to the import's ``tree``
    (its ``model`` type must match; the order of the module docstring). The values compared
    are the import's as det's schema reads them (:func:`_normalised`; ``folder``: where its
    relative paths resolve, default the current folder)."""
    candidates = []
    for name in preset_names():
        resolved = load_config(name).resolved()
        if resolved.get("model", {}).get("type") == tree["model"].get("type"):
            candidates.append((name, resolved))
    if not candidates:
        raise ConfigError(f"no det preset has a {tree['model'].get('type')!r} model to extend",
                          hint="det presets lists the families det has")
    normal = _normalised(tree, candidates[0][0], folder if folder is not None else Path.cwd())
    wanted = _leaves(normal)
    ranked = []
    for name, resolved in candidates:
        theirs = _leaves(resolved)
        shared = sum(1 for path, value in wanted.items() if theirs.get(path) == value)
        written = len(_leaves(_differences(normal, resolved)))
        rank = (-shared, written, _distance(wanted, theirs), len(theirs), name)
        ranked.append((rank, name, resolved, shared))
    _, name, resolved, shared = min(ranked, key=lambda item: item[0])
    return name, resolved, shared


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


def _load_text(text: str, folder: Path) -> Any:
    """The LoadedConfig of TOML ``text`` as a file in ``folder`` (its relative paths resolve
    there); ConfigError as for a file."""
    probe = folder / ".det-config-import-probe.toml"
    probe.write_text(text, encoding="utf-8")
    try:
        return load_config(probe)
    finally:
        probe.unlink(missing_ok=True)


def _validated(tree: dict, preset: str, folder: Path,
               out: list[Untranslated]) -> dict:
    """The loaded config of ``tree`` over ``preset``, with every key det's schema refuses
    removed from ``tree`` (listed with the schema's message)."""
    for _ in range(MAX_ROUNDS):
        try:
            return _load_text(to_toml({"extends": [preset], **tree}), folder)
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
    raise ConfigError("the imported config still does not validate after "
                      f"{MAX_ROUNDS} passes")


def _drop_preset_values(tree: dict, imported: dict, preset: dict) -> None:
    """Remove from ``tree`` what, with the schema's defaults filled in (``imported``, the
    resolved import), equals the preset's resolved value (a pipeline written without its
    defaults), and the tables that leaves empty."""
    for key in list(tree):
        value, ours, theirs = tree[key], imported.get(key), preset.get(key)
        if isinstance(value, dict) and isinstance(ours, dict) and isinstance(theirs, dict):
            _drop_preset_values(value, ours, theirs)
            if not value:
                del tree[key]
        elif ours == theirs:
            del tree[key]


def import_mmdet_config(path: str | Path, configs_root: str | Path | None = None,
                        out_folder: str | Path | None = None) -> ImportResult:
    """``path`` (an MMDetection config) as a det TOML; ``out_folder`` is where the TOML will
    live (its relative paths resolve there; default: the current folder)."""
    read: MMDetConfig = read_mmdet_config(path, configs_root)
    untranslated: list[Untranslated] = []
    tree = _translated(read.values, untranslated)
    folder = Path(out_folder) if out_folder is not None else Path.cwd()
    preset, resolved, shared = closest_preset(tree, folder)
    diff = _differences(tree, {k: resolved.get(k, {}) for k in tree})
    imported = _validated(diff, preset, folder, untranslated).resolved()
    _drop_preset_values(diff, imported, resolved)
    header = [f"# imported from {Path(path).name} by det config import: extends {preset} "
              f"({shared} values equal)"]
    header += [f"# not translated: {u.key}: {u.reason}" for u in untranslated]
    return ImportResult("\n".join(header) + "\n" + to_toml({"extends": [preset], **diff}),
                        preset, shared, untranslated, read.files)
