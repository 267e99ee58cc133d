"""The channels that connect a detector's parts, derived in one phase: when its config resolves.

L levels, C the channels of the maps the heads read.

A backbone config says what its outputs will have (:meth:`BackboneSchema.out_channels`, one
entry per ``out_index``) without building the network; a neck config takes those channels,
fills or checks its own ``in_channels`` and says what its outputs have
(:meth:`NeckSchema.connect`); the detector config hands the result to its heads
(``in_channels``) and to an RoI head (:meth:`RoIHeadSchema.connect`). Each value filled this
way is recorded with its source (``det config show --origin`` prints it); a value written in
the config anyway must agree, or validation fails naming both. Building then reads the
resolved config only: no component re-derives a channel count.

The three bases are abstract: a backbone, neck or RoI head config registered by a plugin
subclasses the one of its kind and implements the method.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, TypeVar

from pydantic import ConfigDict, ValidationError

from detcli.config.schema import Schema, derive_or_check
from detcli.errors import ConfigError

T = TypeVar("T")


def _describe_default(schema: dict[str, Any], cls: type[BackboneSchema]) -> None:
    """JSON Schema extra of a backbone config (``det config schema``): its default
    configuration's label, outputs' channels and loadable weights, under ``x-det-default``."""
    try:
        default = cls()
    except ValidationError:  # a backbone with required keys has no default to describe
        return
    schema["x-det-default"] = {"label": default.label(), "out_channels": default.out_channels(),
                               "weights": default.weights()}


class BackboneSchema(Schema):
    """A backbone's config, which knows its outputs' channels before the network exists."""

    model_config = ConfigDict(json_schema_extra=_describe_default)

    type: str

    @abstractmethod
    def out_channels(self) -> list[int]:
        """Channels of each output feature map (one per ``out_index``), in order."""

    def describe(self, where: str) -> str:
        """``where`` named with this backbone, for messages: ``model.backbone (ResNet)``."""
        return f"{where} ({self.type})"

    def label(self) -> str:
        """A short name for listings (``det presets``): ``ResNet-50``; the type by default."""
        return self.type

    def weights(self) -> list[str]:
        """The ``init_cfg.checkpoint`` names det knows whose tensors fit this backbone as
        configured (converted on load where their layout differs): ``torchvision://resnet50``;
        none by default."""
        return []


class NeckSchema(Schema):
    """A neck's config, connected to the backbone's outputs when the detector config resolves."""

    type: str

    @abstractmethod
    def connect(self, in_channels: list[int], source: str, where: str) -> list[int]:
        """Fill (or check) this neck's input channels with the backbone's ``in_channels``,
        ``source`` naming where they come from and ``where`` this neck's key (``model.neck``);
        -> the channels of each output. Raises ValueError naming both when they disagree."""


class RoIHeadSchema(Schema):
    """An RoI head's config, connected to the C-channel feature maps its RoIs are pooled from."""

    type: str

    @abstractmethod
    def connect(self, in_channels: int, source: str, where: str) -> None:
        """Fill (or check) the channels of its extractor(s) and of the heads reading them."""


def trunk_channels(backbone: BackboneSchema, neck: NeckSchema | None) -> tuple[int, str]:
    """Connect ``model.neck`` to ``model.backbone`` -> (C, the channels every head reads; where
    they come from, for the record). ValueError when the maps the heads would read differ in
    channels (no neck, a backbone with outputs of different widths)."""
    feats = backbone.out_channels()
    feats_from = backbone.describe("model.backbone")
    if neck is not None:
        outs = neck.connect(feats, feats_from, "model.neck")
        kind = neck.type
        if len(set(outs)) != 1:
            raise ValueError(f"model.neck ({kind}) outputs maps of {outs} channels: the heads "
                             "read every level with the same convs, so they need one width")
        return outs[0], f"model.neck ({kind} out_channels {outs[0]})"
    if len(set(feats)) != 1:
        raise ValueError(
            f"without a neck the heads read the backbone's outputs directly, but their "
            f"channels {feats} differ; add a neck (e.g. FPN) or use one out_index")
    return feats[0], feats_from


def connect_head(head: Schema, channels: int, source: str, where: str) -> None:
    """Fill (or check) the ``in_channels`` of the head config at ``where`` (a dense head, an RoI
    box head) with ``channels`` from ``source``. Every head config has that field (``int |
    None = None``): it is how the head learns its input's width."""
    if "in_channels" not in type(head).model_fields:
        raise ValueError(
            f"{where} ({type(head).__name__}) has no in_channels field: a head's config declares "
            f"`in_channels: int | None = None`, which the detector's config fills with the "
            f"{channels} channels of {source}")
    derive_or_check(head, "in_channels", channels, source, f"{where}.in_channels")


def require_in_channels(component: str, in_channels: T | None, source: str) -> T:
    """The resolved ``in_channels`` of a component about to be built; ConfigError when it is
    unset (a config validated on its own, outside a detector, that does not write it)."""
    if in_channels is None:
        raise ConfigError(
            f"{component} needs in_channels: a detector's config derives it from the "
            f"{source}; set in_channels to build the component on its own")
    return in_channels
