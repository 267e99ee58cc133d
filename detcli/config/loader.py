"""Load a TOML config: follow ``extends``, merge, apply ``--set`` overrides, validate once.

``load_config(path, overrides)`` is the one entry point; it returns a :class:`LoadedConfig`
holding the validated config and the origin of every resolved value. ``path`` and every
``extends`` entry may be a file or the name of a packaged preset (``detcli.config.presets``).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from pydantic import BaseModel, ValidationError

from detcli.config import tree as T
from detcli.config.presets import resolve_reference
from detcli.config.root import DetConfig
from detcli.config.schema import Schema
from detcli.config.toml_lines import key_lines
from detcli.config.validation import issues_from_error, record_defaults
from detcli.data.paths import anchor_data_paths
from detcli.errors import ConfigError
from detcli.registry import ensure_current
from detcli.text import display_path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

EXTENDS = "extends"
_SET_KEY = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


@dataclass
class LoadedConfig:
    """A validated config and where each of its values came from."""

    cfg: Any  # the root schema instance (DetConfig unless another schema was asked for)
    origins: T.Origins  # path of every resolved leaf -> origin
    files: list[Path]  # every file read, in the order they apply (bases first)
    overrides: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)  # the merged tree before validation

    @property
    def source(self) -> Path:
        return self.files[-1]

    def resolved(self) -> dict:
        """The validated config as plain TOML-able data (defaults filled, None as ``false``)."""
        return T.without_none(self.cfg.model_dump(mode="json"))


def read_toml(path: Path) -> tuple[dict, T.Origins]:
    """Parse one file (no extends) and give every leaf its ``file:line`` origin."""
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.toml"))
        listing = (f"; it holds {', '.join(inside[:4])}" + (", ..." if len(inside) > 4 else "")
                   if inside else "")
        raise ConfigError(f"config {display_path(path)} is a directory, not a TOML file{listing}",
                          hint=(f"name one file, e.g. {display_path(path / inside[0])}; " if inside
                                else "name a config file; ") + "`det presets` lists the packaged ones")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {display_path(path)}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{display_path(path)} is not valid TOML: {exc}") from None
    lines = key_lines(text)
    name = display_path(path)
    origins: T.Origins = {}
    for leaf, _ in T.leaves(data):
        line = next((lines[leaf[:end]] for end in range(len(leaf), 0, -1) if leaf[:end] in lines), None)
        origins[leaf] = f"{name}:{line}" if line else name
    return data, origins


def _absolute(path: Path) -> Path:
    """``path`` made absolute without following symlinks when that names the same file, so
    ``presets/x.toml`` (a link to ``detcli/presets``) is shown as the user wrote it."""
    lexical = Path(os.path.abspath(path))
    return lexical if lexical.resolve() == path.resolve() else path.resolve()


def _extends_list(data: dict, path: Path) -> list[str]:
    value = data.pop(EXTENDS, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f"{display_path(path)}: `extends` must be a path or a list of paths, got {value!r}")
    return value


def resolve_file(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, T.Origins, list[Path]]:
    """The merged tree of ``path`` and everything it extends, bases first."""
    path = _absolute(path)
    if path.resolve() in {p.resolve() for p in chain}:
        cycle = " -> ".join(display_path(p) for p in chain + (path,))
        raise ConfigError(f"`extends` cycle: {cycle}")
    data, own_origins = read_toml(path)
    anchor_data_paths(data, path.parent)  # data paths: relative to this file (detcli/data/paths.py)
    merged: dict = {}
    origins: T.Origins = {}
    files: list[Path] = []
    for base in _extends_list(data, path):
        base_path = resolve_reference(base, referrer=path)
        base_tree, base_origins, base_files = resolve_file(base_path, chain + (path,))
        T.merge(merged, origins, base_tree, base_origins)
        files += [f for f in base_files if f not in files]
    own_origins = {p: o for p, o in own_origins.items() if p[:1] != (EXTENDS,)}
    T.merge(merged, origins, data, own_origins)
    files.append(path)
    return merged, origins, files


def parse_override(text: str) -> tuple[T.Path, Any]:
    """``"a.b.c=VALUE"`` -> (("a", "b", "c"), value); VALUE is TOML, or a bare string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _SET_KEY.match(key):
        raise ConfigError(
            f"--set {text!r} is not KEY=VALUE", hint="for example --set model.bbox_head.num_classes=3")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()  # a bare word: data.train.ann_file=foo.json
    path = tuple(int(k) if k.isdigit() else k for k in key.split("."))
    return path, parsed


def apply_override(merged: dict, origins: T.Origins, text: str) -> None:
    path, value = parse_override(text)
    origin = f"--set {text}"
    # Walk to the parent; integer keys index into existing arrays.
    node: Any = merged
    for i, key in enumerate(path[:-1]):
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                where = T.format_path(path[:i])
                raise ConfigError(f"--set {text}: {where} has no element [{key}]")
            node = node[key]
            continue
        if not T.is_table(node.get(key, {})) and not isinstance(node.get(key), list):
            raise ConfigError(f"--set {text}: {T.format_path(path[: i + 1])} is a value, not a table")
        node = node.setdefault(key, {})
    array_at = next((path[:i] for i, k in enumerate(path) if isinstance(k, int)), None)
    if array_at is not None:  # arrays are leaves: the whole array now comes from --set
        node[path[-1]] = value
        T.drop_prefix(origins, array_at)
        origins[array_at] = origin
        return
    over: dict = {}
    cursor = over
    for key in path[:-1]:
        cursor = cursor.setdefault(key, {})
    cursor[path[-1]] = value
    T.merge(merged, origins, over, {leaf: origin for leaf, _ in T.leaves(over)})


def load_config(path: str | Path, overrides: Sequence[str] = (), *,
                schema: type[BaseModel] | None = None) -> LoadedConfig:
    """Read ``path`` and its bases, apply ``overrides`` (``"key=value"``) and validate."""
    path = resolve_reference(path)
    merged, origins, files = resolve_file(path)
    for text in overrides:
        apply_override(merged, origins, text)
    if schema is None:
        schema = DetConfig
    ensure_current()
    try:
        cfg = schema.model_validate(T.deep_copy(merged))
    except ValidationError as exc:
        issues = issues_from_error(exc, merged, origins, schema)
        noun = "problem" if len(issues) == 1 else "problems"
        raise ConfigError(f"{display_path(path)}: {len(issues)} {noun} in the config", issues) from None
    record_defaults(cfg, origins)
    return LoadedConfig(cfg=cfg, origins=origins, files=files, overrides=list(overrides), raw=merged)


def validate_tree(tree: dict, schema: type[Schema]) -> Any:
    """Validate an in-memory tree (tests, the Python API); errors as for files."""
    ensure_current()
    try:
        return schema.model_validate(T.deep_copy(tree))
    except ValidationError as exc:
        issues = issues_from_error(exc, tree, {}, schema)
        raise ConfigError(f"{len(issues)} problem(s) in the config", issues) from None
