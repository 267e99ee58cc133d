"""Read the few keys of an Ultralytics ``data.yaml`` that ``det init`` uses, without a YAML library.

The subset read: top-level ``key: value`` lines for ``path``, ``train``, ``val``, ``test`` (a
string each) and ``nc`` (an integer), and ``names`` written in any of the three ways such files
use::

    names: [cat, dog]          names:             names:
                                 - cat              0: cat
                                 - dog              1: dog

Comments (``# ...``) and quotes are stripped. Anything else is ignored; a file with neither
``names`` nor ``train`` is not a data.yaml (None). Nothing is evaluated.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

_TOP = re.compile(r"^([A-Za-z_][\w-]*)\s*:\s*(.*)$")
_ITEM = re.compile(r"^\s+-\s*(.*)$")
_PAIR = re.compile(r"^\s+(\d+)\s*:\s*(.*)$")
STRING_KEYS = ("path", "train", "val", "test")


def _scalar(text: str) -> str:
    text = re.sub(r"\s+#.*$", "", text.strip()) if not text.strip().startswith(("'", '"')) else text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text.strip()


def _inline_list(text: str) -> list[str]:
    inner = text.strip()[1:-1]
    return [_scalar(v) for v in inner.split(",") if v.strip()]


def parse_data_yaml(text: str) -> Optional[dict[str, Any]]:
    """The keys above from a data.yaml's text; None when it has neither ``names`` nor ``train``."""
    out: dict[str, Any] = {}
    block: Optional[str] = None  # the top-level key whose indented lines follow
    items: list[str] = []
    pairs: dict[int, str] = {}
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        top = _TOP.match(line)
        if top:
            block = None
            key, value = top.group(1), top.group(2)
            value = re.sub(r"\s+#.*$", "", value) if not value.strip().startswith(("'", '"')) else value
            if key == "names":
                if value.strip().startswith("["):
                    out["names"] = _inline_list(value)
                elif not value.strip():
                    block = "names"
            elif key in STRING_KEYS and value.strip() and not value.strip().startswith("["):
                out[key] = _scalar(value)
            elif key == "nc" and value.strip().isdigit():
                out["nc"] = int(value.strip())
            continue
        if block == "names":
            item, pair = _ITEM.match(line), _PAIR.match(line)
            if item:
                items.append(_scalar(item.group(1)))
            elif pair:
                pairs[int(pair.group(1))] = _scalar(pair.group(2))
    if items:
        out["names"] = items
    elif pairs:
        out["names"] = [pairs.get(k, f"class_{k}") for k in range(max(pairs) + 1)]
    if "names" not in out and "train" not in out:
        return None
    return out


def read_data_yaml(path: Path) -> Optional[dict[str, Any]]:
    """:func:`parse_data_yaml` of a file; None when it cannot be read or is not a data.yaml."""
    try:
        return parse_data_yaml(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
