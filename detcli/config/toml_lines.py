"""Line numbers for TOML keys, which ``tomllib`` does not report.

A small scanner over the text: it follows ``[table]`` and ``[[array]]`` headers and ``key =``
lines (dotted and quoted keys included) and skips the inside of multi-line arrays and strings.
Keys inside an inline table get the line of the key that holds the table; an array of tables is
one leaf, at its first header. Good enough to point a user at the line that set a value.
"""

from __future__ import annotations

import re

_KEY = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_TABLE = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]\s*(#.*)?$")
_ARRAY_TABLE = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]\s*(#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=\s*(.*)$")


def split_key(dotted: str) -> tuple[str, ...]:
    parts = re.findall(_KEY, dotted)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


def _bracket_balance(value: str) -> int:
    """Open minus closed brackets outside strings and comments."""
    depth, quote = 0, None
    for ch in value:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path defined in ``text`` to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}
    header: tuple[str, ...] = ()
    in_array_table = False
    depth = 0
    in_multiline_string = None
    for number, line in enumerate(text.splitlines(), start=1):
        if in_multiline_string:
            if line.count(in_multiline_string) % 2 == 1:
                in_multiline_string = None
            continue
        if depth > 0:
            depth += _bracket_balance(line)
            continue
        if m := _ARRAY_TABLE.match(line):
            header = split_key(m.group(1))
            lines.setdefault(header, number)
            in_array_table = True
        elif m := _TABLE.match(line):
            header = split_key(m.group(1))
            lines.setdefault(header, number)
            in_array_table = False
        elif (m := _ASSIGN.match(line)) and not in_array_table:
            path = header + split_key(m.group(1))
            lines[path] = number
            value = m.group(2)
            for fence in ('"""', "'''"):
                if value.count(fence) % 2 == 1:
                    in_multiline_string = fence
            depth = _bracket_balance(value)
    return lines
