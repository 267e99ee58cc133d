"""Key-by-key comparison of two resolved configs.

Both trees are flattened to dotted leaf paths; arrays of tables (pipelines) are flattened by
index (``data.train.pipeline[2].img_scale``) so a changed transform setting shows as one line,
while arrays of plain values stay whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from detcli.config import tree as T


@dataclass
class Change:
    path: str
    kind: Literal["added", "removed", "changed"]
    old: Any = None
    new: Any = None


def flatten(tree: Any, prefix: T.Path = ()) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if T.is_table(tree):
        for k, v in tree.items():
            out.update(flatten(v, prefix + (k,)))
    elif isinstance(tree, list) and any(T.is_table(x) for x in tree):
        for i, v in enumerate(tree):
            out.update(flatten(v, prefix + (i,)))
    else:
        out[T.format_path(prefix)] = tree
    return out


def diff(a: dict, b: dict) -> list[Change]:
    """What changes from ``a`` to ``b``; a key ``b`` adds is listed where it stands in ``b``."""
    flat_a, flat_b = flatten(a), flatten(b)
    order = list(flat_a)
    previous = None
    for path in flat_b:
        if path not in flat_a:
            order.insert(order.index(previous) + 1 if previous is not None else 0, path)
        previous = path
    changes: list[Change] = []
    for path in order:
        if path not in flat_b:
            changes.append(Change(path, "removed", old=flat_a[path]))
        elif path not in flat_a:
            changes.append(Change(path, "added", new=flat_b[path]))
        elif flat_b[path] != flat_a[path]:
            changes.append(Change(path, "changed", old=flat_a[path], new=flat_b[path]))
    return changes
