"""The base of every config model, and the machinery that keeps registry unions current.

``Schema`` forbids unknown keys and defers building its validator until first use, so a
discriminated union over a registry (``Annotated[Schema, BACKBONES]``) sees every component
registered by then, plugins included. A component registered after that bumps
``detcli.registry.generation``; :func:`ensure_current` then rebuilds every model, leaves first.

TOML has no null. An optional setting is turned off with ``false`` (``init_cfg = false``,
``optimizer_config.grad_clip = false``); fields typed :data:`Maybe` accept it, and the resolved
config writes ``None`` back as ``false``.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Optional, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PrivateAttr

T = TypeVar("T")


class Schema(BaseModel):
    """A config model: unknown keys are errors.

    A composite fills the values its children can derive (a neck's ``in_channels`` from the
    backbone) with :meth:`derive`, which records why, so ``det config show --origin`` can say so.
    """

    model_config = ConfigDict(extra="forbid", defer_build=True)
    _derived: dict[str, str] = PrivateAttr(default_factory=dict)

    def derive(self, name: str, value: Any, reason: str) -> None:
        """Set field ``name`` to a value derived from elsewhere in the config."""
        setattr(self, name, value)
        self._derived[name] = reason


def derive_or_check(cfg: Schema, name: str, value: Any, reason: str, where: str) -> None:
    """Fill ``cfg.name`` with ``value`` derived from ``reason``, or check the value given."""
    if name not in type(cfg).model_fields:
        return
    given = getattr(cfg, name)
    if given is None:
        cfg.derive(name, value, reason)
    elif given != value:
        raise ValueError(
            f"{where} = {given} disagrees with {value} derived from {reason}; "
            f"remove {where} to derive it")


def _false_is_none(value: Any) -> Any:
    return None if value is False else value


# An optional setting; ``false`` in TOML means "off" (None).
Maybe = Annotated[Optional[T], BeforeValidator(_false_is_none)]

_built_generation = -1


def _all_schemas() -> list[type[Schema]]:
    seen: list[type[Schema]] = []
    stack = list(Schema.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls not in seen:
            seen.append(cls)
            stack.extend(cls.__subclasses__())
    return seen


def _dependencies(model: type[Schema]) -> list[type[Schema]]:
    """Schema models a model's fields refer to, through unions, lists and registries."""
    from detcli.registry import Registry

    out: list[type[Schema]] = []

    def walk(tp: Any) -> None:
        if isinstance(tp, Registry):
            out.extend(tp.configs())
        elif isinstance(tp, type) and issubclass(tp, Schema):
            out.append(tp)
        for arg in typing.get_args(tp):
            walk(arg)
        for meta in getattr(tp, "__metadata__", ()):
            walk(meta)

    for field in model.model_fields.values():
        walk(field.annotation)
        for meta in field.metadata:
            walk(meta)
    return out


def ensure_current() -> None:
    """Rebuild every config model if components were registered since the last build."""
    global _built_generation
    from detcli import registry

    registry.load_plugins()
    if _built_generation == registry.generation:
        return
    order: list[type[Schema]] = []
    visiting: set[type[Schema]] = set()

    def visit(model: type[Schema]) -> None:
        if model in order or model in visiting:
            return
        visiting.add(model)
        for dep in _dependencies(model):
            visit(dep)
        visiting.discard(model)
        order.append(model)

    for model in _all_schemas():
        visit(model)
    for model in order:  # leaves first, so parents embed fresh child schemas
        model.model_rebuild(force=True)
    _built_generation = registry.generation
