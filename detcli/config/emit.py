"""Write a config tree as TOML, optionally with an origin comment on every value.

Scalars and arrays of a table come first, then its sub-tables as ``[a.b]`` sections; arrays of
tables (pipelines) are written as multi-line arrays of inline tables, which reads like the
config files in presets/. ``tomllib.loads(to_toml(tree)) == tree`` for every tree without None.
"""

from __future__ import annotations

import json
import re
from typing import Any

import tomli_w

from detcli.config import tree as T

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
COMMENT_COLUMN = 60


def key(name: Any) -> str:
    name = str(name)
    return name if _BARE.match(name) else json.dumps(name)


def value(v: Any) -> str:
    """One TOML value on one line (arrays of tables are handled by ``_array_lines``)."""
    if isinstance(v, (bool, int, float, str)):
        # tomli-w knows TOML's escaping rules and float spellings (inf, nan)
        return tomli_w.dumps({"v": v}).split(" = ", 1)[1].rstrip("\n")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    if v is None:
        return "false"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _with_comment(line: str, comment: str | None) -> str:
    if not comment:
        return line
    return f"{line.ljust(COMMENT_COLUMN - 1)} # {comment}"


def _array_lines(name: str, items: list, comment: str | None) -> list[str]:
    if not any(isinstance(x, dict) for x in items):
        return [_with_comment(f"{name} = {value(items)}", comment)]
    lines = [_with_comment(f"{name} = [", comment)]
    lines += [f"    {value(x)}," for x in items]
    lines.append("]")
    return lines


def to_toml(tree: dict, origins: T.Origins | None = None, header: str | None = None) -> str:
    """Serialise ``tree``; with ``origins``, each value carries ``# origin``."""
    out: list[str] = [f"# {line}" if line else "#" for line in (header or "").splitlines()]
    _table(tree, (), origins, out)
    return "\n".join(out).strip("\n") + "\n"


def _table(tree: dict, prefix: T.Path, origins: T.Origins | None, out: list[str]) -> None:
    scalars = [(k, v) for k, v in tree.items() if not T.is_table(v)]
    tables = [(k, v) for k, v in tree.items() if T.is_table(v)]
    if prefix and (scalars or not tables):
        out.append("")
        out.append("[" + ".".join(key(p) for p in prefix) + "]")
    for k, v in scalars:
        comment = T.origin_of(origins, prefix + (k,)) if origins is not None else None
        if isinstance(v, (list, tuple)):
            out.extend(_array_lines(key(k), list(v), comment))
        else:
            out.append(_with_comment(f"{key(k)} = {value(v)}", comment))
    for k, v in tables:
        _table(v, prefix + (k,), origins, out)
