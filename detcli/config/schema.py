"""The base of every config model: pydantic only, nothing else of the package.

``Schema`` forbids unknown keys and defers building its validator until first use, so a
discriminated union over a registry (``Annotated[Schema, BACKBONES]``) sees every component
registered by then, plugins included. Keeping those unions current when a component is
registered later is the registry's job (:func:`detcli.registry.ensure_current`): the registry
imports this module, never the other way round.

TOML has no null. An optional setting is turned off with ``false`` (``init_cfg = false``,
``optimizer_config.grad_clip = false``); fields typed :data:`Maybe` accept it, and the resolved
config writes ``None`` back as ``false``.
"""

from __future__ import annotations

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
