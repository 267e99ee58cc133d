"""Reading an MMDetection 2.x / 3.x Python config without executing it.

MMDetection's configs are Python files, and MMEngine reads them by running them. det never
does: the file is parsed with :mod:`ast` and only these forms are evaluated, everything else
is an :class:`Unread` value naming the line (and listed, never run):

- module-level assignments ``name = value`` (``_base_`` included), in order;
- literals: numbers, strings, ``True`` / ``False`` / ``None``, lists, tuples, dicts (string
  keys), ``dict(key=value, ...)`` calls, unary minus, ``+`` of numbers, strings, lists and
  tuples, ``*`` of numbers and ``list * int``, ``/`` and ``//`` of numbers;
- list comprehensions ``[expr for name in items]`` over a list or tuple read as above (one
  ``for``, no ``if``), as MMDetection's TTA configs write their ``Resize`` per scale;
- names: an earlier assignment of the same file, or of its bases (MMEngine lets a file use its
  bases' variables through ``{{_base_.x}}``, and many configs name their own variables:
  ``backend_args = None`` ... ``backend_args=backend_args``);
- ``{{_base_.a.b}}`` and ``{{_base_.a[0]}}``: the merged bases' value (MMEngine substitutes
  the text before parsing; det replaces it by a reference and resolves it).

``_base_`` (a string or a list of strings) names files relative to the config's folder, read
the same way and merged in order; the file's own values are merged over them (dicts key by
key, anything else replaced; a dict with ``_delete_ = True`` replaces instead of merging), as
MMEngine's ``Config.fromfile`` does. Paths that leave ``configs_root`` (``--mmdet-configs``) or
the file's folder are read from where they point, after ``..`` is resolved.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.errors import ConfigError

BASE_REF = re.compile(r"\{\{\s*_base_\.([A-Za-z_][\w\.\[\]'\"]*)\s*\}\}")
REF_PREFIX = "__det_base_ref_"
_MISSING = object()  # a name not bound before a comprehension bound it


@dataclass(frozen=True)
class Unread:
    """A value det does not evaluate: ``source`` is its text, ``where`` ``file:line``."""

    source: str
    where: str

    def __repr__(self) -> str:
        return f"<not read: {self.source} at {self.where}>"


@dataclass
class MMDetConfig:
    """The merged config (``values``: its top-level names) and the files it came from,
    first the deepest base."""

    values: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def read_mmdet_config(path: str | Path, configs_root: str | Path | None = None) -> MMDetConfig:
    """``path`` and its ``_base_`` chain, merged, read as the module docstring says.
    ConfigError for a missing file, Python that does not parse, or a ``_base_`` cycle."""
    return _read(Path(path).expanduser().resolve(), None if configs_root is None
                 else Path(configs_root).expanduser().resolve(), ())


def _read(path: Path, root: Path | None, chain: tuple[Path, ...]) -> MMDetConfig:
    if path in chain:
        raise ConfigError(f"{path}: _base_ cycle: {' -> '.join(map(str, chain + (path,)))}")
    if not path.is_file():
        raise ConfigError(f"MMDetection config {path} does not exist",
                          hint="_base_ paths are relative to the file that names them")
    text = path.read_text(encoding="utf-8")
    refs: dict[str, str] = {}

    def mark(match: re.Match[str]) -> str:
        name = f"{REF_PREFIX}{len(refs)}"
        refs[name] = match.group(1)
        return name

    try:
        tree = ast.parse(BASE_REF.sub(mark, text), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not Python det can parse ({exc.msg})") from None
    evaluator = _Evaluator(path, refs)
    own: dict[str, Any] = {}
    bases = MMDetConfig({}, [])
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            continue  # imports, functions, ...: never run (the importer lists what is missing)
        name = node.targets[0].id
        value = evaluator.value(node.value)
        if name == "_base_":
            bases = _read_bases(path, value, root, chain + (path,))
            evaluator.bases = bases.values
            continue
        own[name] = value
        evaluator.names[name] = value
    merged = merge(bases.values, own)
    return MMDetConfig(merged, bases.files + [path])


def _read_bases(path: Path, value: Any, root: Path | None,
                chain: tuple[Path, ...]) -> MMDetConfig:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of them, got {value!r}")
    merged: dict[str, Any] = {}
    files: list[Path] = []
    for name in names:
        base = _read((path.parent / name).resolve(), root, chain)
        merged = merge(merged, base.values)
        files += [f for f in base.files if f not in files]
    return MMDetConfig(merged, files)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: dicts key by key (a dict with ``_delete_``
    true replaces), everything else replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and value.get("_delete_"):
            out[key] = {k: v for k, v in value.items() if k != "_delete_"}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def lookup(values: dict[str, Any], dotted: str) -> Any:
    """``a.b[0].c`` in ``values``; KeyError / IndexError when a part is missing."""
    value: Any = values
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", dotted):
        if part.startswith("["):
            value = value[int(part[1:-1])]
        else:
            value = value[part.strip("'\"")]
    return value


class _Evaluator:
    """Evaluates the literal forms of the module docstring; anything else is :class:`Unread`."""

    def __init__(self, path: Path, refs: dict[str, str]) -> None:
        self.path, self.refs = path, refs
        self.names: dict[str, Any] = {}
        self.bases: dict[str, Any] = {}

    def unread(self, node: ast.AST) -> Unread:
        return Unread(ast.unparse(node), f"{self.path.name}:{getattr(node, 'lineno', '?')}")

    def value(self, node: ast.AST) -> Any:  # noqa: C901 - one case per syntax form
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self.value(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            out: dict[str, Any] = {}
            for key, value in zip(node.keys, node.values):
                if key is None:  # **other
                    spread = self.value(value)
                    if not isinstance(spread, dict):
                        return self.unread(node)
                    out.update(spread)
                    continue
                name = self.value(key)
                if not isinstance(name, (str, int)):
                    return self.unread(node)
                out[str(name)] = self.value(value)
            return out
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "dict" and not node.args):
            out = {}
            for keyword in node.keywords:
                if keyword.arg is None:
                    spread = self.value(keyword.value)
                    if not isinstance(spread, dict):
                        return self.unread(node)
                    out.update(spread)
                else:
                    out[keyword.arg] = self.value(keyword.value)
            return out
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if isinstance(operand, (int, float)) and not isinstance(operand, bool):
                return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.ListComp):
            return self.comprehension(node)
        return self.unread(node)

    def comprehension(self, node: ast.ListComp) -> Any:
        """``[expr for name in items]`` with ``items`` a list or tuple det reads (no ``if``, one
        ``for``): ``expr`` read once per item, ``name`` bound to it (MMDetection's
        ``[dict(type='Resize', scale=s) for s in img_scales]``)."""
        if len(node.generators) != 1:
            return self.unread(node)
        loop = node.generators[0]
        if loop.ifs or loop.is_async or not isinstance(loop.target, ast.Name):
            return self.unread(node)
        items = self.value(loop.iter)
        if not isinstance(items, (list, tuple)):
            return self.unread(node)
        name, saved = loop.target.id, self.names.get(loop.target.id, _MISSING)
        try:
            out = []
            for item in items:
                self.names[name] = item
                out.append(self.value(node.elt))
        finally:
            if saved is _MISSING:
                del self.names[name]
            else:
                self.names[name] = saved
        return out

    def name(self, node: ast.Name) -> Any:
        if node.id in self.refs:
            try:
                return lookup(self.bases, self.refs[node.id])
            except (KeyError, IndexError, TypeError):
                return Unread(f"{{{{_base_.{self.refs[node.id]}}}}} (not in the bases)",
                              f"{self.path.name}:{node.lineno}")
        if node.id in self.names:
            return self.names[node.id]
        if node.id in self.bases:  # MMEngine 3.x lets a file use a base's variable by name
            return self.bases[node.id]
        return self.unread(node)

    def binop(self, node: ast.BinOp) -> Any:
        left, right = self.value(node.left), self.value(node.right)
        number = (int, float)
        try:
            if isinstance(node.op, ast.Add) and type(left) is type(right) and isinstance(
                    left, (list, tuple, str, int, float)):
                return left + right
            if isinstance(node.op, ast.Add) and isinstance(left, number) and isinstance(
                    right, number):
                return left + right
            if isinstance(node.op, ast.Sub) and isinstance(left, number) and isinstance(
                    right, number):
                return left - right
            if isinstance(node.op, ast.Mult) and (
                    (isinstance(left, number) and isinstance(right, number))
                    or (isinstance(left, list) and isinstance(right, int))):
                return left * right
            if isinstance(node.op, (ast.Div, ast.FloorDiv)) and isinstance(
                    left, number) and isinstance(right, number) and right != 0:
                return left / right if isinstance(node.op, ast.Div) else left // right
        except TypeError:
            pass
        return self.unread(node)
