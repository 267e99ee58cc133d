"""Raw config trees before validation: merge rules and provenance.

A *tree* is the dict a TOML file parses to. A *path* is a tuple of keys (and list indices) from
the root. ``Origins`` maps the path of every leaf to where its value came from: ``"file.toml:12"``,
``"--set model.x=1"``, ``"default"`` (filled in by the schema) or ``"derived from ..."``.
Arrays are leaves: they replace, so one origin covers a whole array.

Merge rules (``merge``), the same for ``extends`` and ``--set``:
1. tables merge key by key;
2. arrays and scalars replace;
3. a table whose discriminator (``type``, or ``policy`` for ``lr_config``) changes is replaced as
   a whole, so switching a component never inherits the old component's keys.
"""

from __future__ import annotations

from typing import Any, Iterator

Path = tuple[Any, ...]
Origins = dict[Path, str]

DISCRIMINATORS = ("type", "policy")


def is_table(value: Any) -> bool:
    return isinstance(value, dict)


def discriminator_changed(old: dict, new: dict) -> bool:
    return any(k in new and k in old and new[k] != old[k] for k in DISCRIMINATORS)


def leaves(tree: Any, prefix: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every leaf (non-table value; arrays included whole) with its path."""
    if is_table(tree):
        for key, value in tree.items():
            yield from leaves(value, prefix + (key,))
    else:
        yield prefix, tree


def drop_prefix(origins: Origins, prefix: Path) -> None:
    for path in [p for p in origins if p[: len(prefix)] == prefix]:
        del origins[path]


def merge(base: dict, base_origins: Origins, over: dict, over_origins: Origins,
          prefix: Path = ()) -> None:
    """Merge ``over`` into ``base`` in place, moving origins along with the values."""
    for key, value in over.items():
        path = prefix + (key,)
        old = base.get(key)
        if is_table(value) and is_table(old) and not discriminator_changed(old, value):
            merge(old, base_origins, value, over_origins, path)
            continue
        drop_prefix(base_origins, path)
        base[key] = deep_copy(value)
        for sub, origin in over_origins.items():
            if sub[: len(path)] == path:
                base_origins[sub] = origin


def deep_copy(value: Any) -> Any:
    if is_table(value):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value


def get_path(tree: Any, path: Path) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def origin_of(origins: Origins, path: Path) -> str | None:
    """The origin of ``path``, or of the nearest ancestor that has one (an array holding it)."""
    for end in range(len(path), 0, -1):
        if path[:end] in origins:
            return origins[path[:end]]
    # a table: report the origin of its first leaf
    for sub, origin in origins.items():
        if sub[: len(path)] == path:
            return origin
    return None


def format_path(path: Path) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def without_none(tree: Any) -> Any:
    """TOML has no null: ``None`` is written as ``false`` ("off"), which every optional accepts."""
    if is_table(tree):
        return {k: without_none(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [without_none(v) for v in tree]
    return False if tree is None else tree
