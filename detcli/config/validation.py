"""Turn pydantic's validation errors into config issues a person can act on.

Each issue names the dotted key path (union tags that pydantic puts in its error locations are
dropped), the bad value, the file and line that set it, and where possible a did-you-mean: the
closest known key for an unknown key, the closest registered name for an unknown ``type``.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from detcli.config import tree as T
from detcli.config.schema import Schema
from detcli.errors import ConfigIssue
from detcli.registry import Registry, suggest


def _unwrap(tp: Any) -> Any:
    """Strip Optional and Annotated; an Annotated registry field becomes the registry."""
    while True:
        if typing.get_origin(tp) is typing.Annotated:
            registries = [m for m in tp.__metadata__ if isinstance(m, Registry)]
            if registries:
                return registries[0]
            tp = typing.get_args(tp)[0]
            continue
        if typing.get_origin(tp) in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _tag_of(model: Any) -> str | None:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        default = model.model_fields["type"].default
        return default if isinstance(default, str) else None
    return None


def _step(tp: Any, item: Any) -> Any:
    """The type validating ``value[item]`` when ``tp`` validates ``value``; None to skip ``item``."""
    tp = _unwrap(tp)
    if isinstance(tp, Registry):
        return tp.config(item) if item in tp else None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(item) if isinstance(item, str) else None
        if field is None:
            return None
        registries = [m for m in field.metadata if isinstance(m, Registry)]
        return registries[0] if registries else field.annotation
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (list, tuple, set) and isinstance(item, int) and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (Union, types.UnionType):
        for arg in args:
            if _tag_of(_unwrap(arg)) == item:
                return _unwrap(arg)
    return None


def schema_at(root: type, loc: tuple) -> Any:
    current: Any = root
    for item in loc:
        nxt = _step(current, item)
        if nxt is not None:
            current = nxt
    return _unwrap(current)


def key_path(raw: Any, loc: tuple) -> T.Path:
    """The path through the raw tree that ``loc`` names, without pydantic's union tags."""
    path: list[Any] = []
    node = raw
    for item in loc:
        if isinstance(node, dict) and item in node:
            node = node[item]
            path.append(item)
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
            path.append(item)
        elif isinstance(node, dict) and isinstance(item, str) and item not in _tags_seen(node):
            path.append(item)  # a missing or unknown key: name it, then stop descending
            node = None
    return tuple(path)


def _tags_seen(node: dict) -> set:
    return {node.get("type"), node.get("policy")}


def _issue(err: dict, raw: dict, origins: T.Origins, root: type) -> ConfigIssue:
    loc = tuple(err["loc"])
    path = key_path(raw, loc)
    name = T.format_path(path) or "(top level)"
    kind, value = err["type"], err.get("input")
    origin = T.origin_of(origins, path)
    if kind == "extra_forbidden":
        parent = schema_at(root, loc[:-1])
        known = list(parent.model_fields) if isinstance(parent, type) and issubclass(parent, BaseModel) else []
        hint = suggest(str(loc[-1]), known)
        return ConfigIssue(name, f"unknown key {loc[-1]!r} (value {value!r})", value, origin,
                           f"did you mean {hint!r}?" if hint else f"valid keys: {', '.join(known)}")
    if kind in ("unknown_component", "union_tag_invalid", "union_tag_not_found"):
        return _type_issue(err, name, path, origins, root, loc)
    if kind == "missing":
        parent = T.format_path(path[:-1]) or "the top level"
        return ConfigIssue(name, f"missing required key (add it under {parent})", None,
                           T.origin_of(origins, path[:-1]))
    message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return ConfigIssue(name, f"{message} (got {value!r})" if not isinstance(value, dict) else message,
                       value, origin)


def _type_issue(err: dict, name: str, path: T.Path, origins: T.Origins, root: type,
                loc: tuple) -> ConfigIssue:
    ctx = err.get("ctx") or {}
    value = err.get("input")
    target = schema_at(root, loc)
    if isinstance(target, Registry):
        kind, names = target.kind, target.names()
    else:
        kind = "type"
        names = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        if not names:
            names = [t for t in (_tag_of(_unwrap(a)) for a in typing.get_args(target)) if t]
    choices = ", ".join(names)
    if not isinstance(value, dict) or "type" not in value:
        got = "" if isinstance(value, dict) else f" (got {value!r})"
        return ConfigIssue(name + ".type", f"missing `type` for this {kind}{got}; registered: {choices}",
                           value, T.origin_of(origins, path), f"add for example type = {names[0]!r}" if names else None)
    tag = value["type"]
    hint = suggest(str(tag), names)
    return ConfigIssue(name + ".type", f"unknown {kind} type {tag!r}; registered: {choices}", tag,
                       T.origin_of(origins, path + ("type",)), f"did you mean {hint!r}?" if hint else None)


def issues_from_error(exc: ValidationError, raw: dict, origins: T.Origins, root: type) -> list[ConfigIssue]:
    """One issue per key path: the alternatives of a union are folded into one message."""
    issues: dict[str, ConfigIssue] = {}
    for err in exc.errors(include_url=False):
        issue = _issue(err, raw, origins, root)
        known = issues.get(issue.path)
        if known is None:
            issues[issue.path] = issue
        elif issue.message not in known.message:
            known.message = f"{known.message}; or {issue.message}"
    return list(issues.values())


def record_defaults(cfg: Schema, origins: T.Origins) -> None:
    """Give every resolved leaf that no file or --set named an origin: derived or default."""
    _record_derived(cfg, (), origins)
    dumped = cfg.model_dump(mode="json")
    for path, _ in T.leaves(dumped):
        if not any(path[:end] in origins for end in range(len(path), 0, -1)):
            origins[path] = "default"


def _record_derived(model: BaseModel, prefix: T.Path, origins: T.Origins) -> None:
    for name, reason in (getattr(model, "__pydantic_private__", None) or {}).get("_derived", {}).items():
        T.drop_prefix(origins, prefix + (name,))
        origins[prefix + (name,)] = f"derived: {reason}"
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            _record_derived(value, prefix + (name,), origins)
