"""Registries: one per component kind, each mapping a ``type`` name to a config model and a class.

A component is a pair: a pydantic config model (a :class:`~detcli.config.schema.Schema` with a
literal ``type`` field) and a plain class with a keyword-only ``__init__``. :meth:`Registry.build`
is the one way from a config to a component: ``cls(**fields_of(cfg), **derived)``, every field
but ``type`` passed as is (shallow: a sub-config stays a config object for the class to build).
A class defines ``from_config(cfg, **derived)`` only when it must do more than that (build its
sub-components, rename or drop a field, check a derived value). ``derived`` carries the values a
composite passes down (the head's ``in_channels`` comes from the neck); they never appear in TOML.

The config model is the one source of defaults and validation (ranges, enums). A constructor
may repeat a default so it can be called with fewer arguments, but :meth:`Registry.register`
refuses a class whose keyword default disagrees with its config's (:func:`default_mismatches`).

A config field typed ``Annotated[Schema, BACKBONES]`` (the aliases at the bottom of this module)
validates as a discriminated union on ``type`` over whatever is registered when the schema is
built, so components added by a plugin (entry-point group ``detcli.plugins``) validate exactly
like the built-in ones. A component registered after a schema was built bumps
:data:`generation`; :func:`ensure_current` then rebuilds every config model, leaves first.
The registry imports :mod:`detcli.config.schema` (the pydantic base), never the other way round.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import logging
import typing
from typing import Annotated, Any, Callable, Generic, TypeVar

from pydantic_core import core_schema

from detcli.config.schema import Schema
from detcli.errors import PluginError, RegistryError

log = logging.getLogger(__name__)

T = TypeVar("T")
C = TypeVar("C", bound=type)

PLUGIN_GROUP = "detcli.plugins"
_plugins_loaded = False
# Bumped on every registration; ensure_current rebuilds the config models when it changed.
generation = 0
_built_generation = -1


def type_name(config: type) -> str:
    """The ``type`` literal of a config model (its ``type`` field's default)."""
    field = getattr(config, "model_fields", {}).get("type")
    if field is None or not isinstance(field.default, str):
        raise RegistryError(
            f"{config.__name__} cannot be registered: it needs a field "
            f"`type: Literal[\"Name\"] = \"Name\"`"
        )
    return field.default


def fields_of(cfg: Schema) -> dict[str, Any]:
    """A config's constructor arguments: every field but ``type``, by name; shallow (a sub-config
    stays a config object), lists and dicts copied so a component never aliases its config."""
    out = {}
    for name in type(cfg).model_fields:
        if name == "type":
            continue
        value = getattr(cfg, name)
        out[name] = list(value) if isinstance(value, list) else dict(value) if isinstance(value, dict) else value
    return out


def _same_default(a: Any, b: Any) -> bool:
    """Equal defaults; a tuple in a signature and a list in a config model (TOML's arrays) count
    as the same sequence, ``True`` and ``1`` do not."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_default(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)


def _admits_none(annotation: Any) -> bool:
    """Whether a field's type allows None (``Optional[...]``, ``Maybe[...]``)."""
    if annotation is None or annotation is type(None):
        return True
    return any(_admits_none(arg) for arg in typing.get_args(annotation))


def default_mismatches(config: type[Schema], cls: type) -> list[str]:
    """Where ``cls.__init__``'s keyword defaults disagree with ``config``'s field defaults.

    A keyword the config model does not have and a default only one side has are not
    disagreements; nor is a ``None`` default for a sub-config field that cannot be None in the
    config (the class builds that sub-config's default itself; the sub-config is checked where
    it is registered). Where the config allows None (``Maybe``: "off"), None is a value and must
    be the config's default to be the constructor's.
    """
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return []
    out = []
    for name, field in config.model_fields.items():
        param = params.get(name)
        if name == "type" or param is None or param.default is inspect.Parameter.empty:
            continue
        if field.is_required():
            continue
        default = field.get_default(call_default_factory=True)
        if param.default is None and isinstance(default, Schema) and not _admits_none(field.annotation):
            continue
        if not _same_default(param.default, default):
            out.append(f"{name}: {cls.__name__}.__init__ has {param.default!r}, "
                       f"{config.__name__} has {default!r}")
    return out


def suggest(word: str, choices: list[str]) -> str | None:
    """The closest of ``choices`` to ``word``, or None when nothing is close."""
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


class Registry(Generic[T]):
    """Named components of one kind. ``kind`` is a human name ("backbone", "assigner")."""

    def __init__(self, kind: str, contract: str) -> None:
        self.kind = kind
        self.contract = contract  # what every entry must accept and return
        self._configs: dict[str, type[Schema]] = {}
        self._classes: dict[str, type] = {}

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

    def __contains__(self, name: str) -> bool:
        return name in self._configs

    def names(self) -> list[str]:
        return sorted(self._configs)

    def register(self, config: type[Schema]) -> Callable[[C], C]:
        """Class decorator pairing ``config`` with the decorated class."""

        def decorate(cls: C) -> C:
            mismatches = default_mismatches(config, cls)
            if mismatches:
                raise RegistryError(
                    f"{self.kind} {cls.__name__} cannot be registered: its constructor's defaults "
                    f"disagree with its config model's ({'; '.join(mismatches)})",
                    hint=f"keep the defaults in {config.__name__}; repeat them in __init__ "
                         f"unchanged or not at all")
            name = self.add_config(config)
            if name in self._classes and self._classes[name] is not cls:
                raise RegistryError(f"{self.kind} {name!r} is already registered")
            self._classes[name] = cls
            return cls

        return decorate

    def add_config(self, config: type[Schema]) -> str:
        """Register a config model on its own (its class is registered with :meth:`register`)."""
        global generation
        name = type_name(config)
        known = self._configs.get(name)
        if known is not None and known is not config:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered by {known.__module__}.{known.__name__}"
            )
        self._configs[name] = config
        generation += 1
        return name

    def config(self, name: str) -> type[Schema]:
        if name not in self._configs:
            raise RegistryError(self.unknown_message(name))
        return self._configs[name]

    def configs(self) -> list[type[Schema]]:
        return [self._configs[n] for n in self.names()]

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            if name in self._configs:
                raise RegistryError(f"{self.kind} {name!r} has a config model but no implementation")
            raise RegistryError(self.unknown_message(name))
        return self._classes[name]

    def build(self, cfg: Schema, **derived: Any) -> T:
        """Build the component ``cfg`` describes; ``derived`` are values its parent passes down:
        ``cls(**fields_of(cfg), **derived)``, or the class's own ``from_config`` when it has one."""
        cls = self.get(cfg.type)  # type: ignore[attr-defined]
        own = getattr(cls, "from_config", None)
        if own is not None:
            return own(cfg, **derived)
        return cls(**fields_of(cfg), **derived)

    def unknown_message(self, name: str) -> str:
        names = self.names()
        msg = f"unknown {self.kind} type {name!r}; registered: {', '.join(names) or '(none)'}"
        hint = suggest(name, names)
        return msg + (f". Did you mean {hint!r}?" if hint else "")

    # pydantic hook: ``Annotated[Schema, registry]`` validates as a tagged union on ``type``.
    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        load_plugins()
        if not self._configs:
            raise RegistryError(f"no {self.kind} is registered")
        choices = {name: handler.generate_schema(cfg) for name, cfg in self._configs.items()}
        return core_schema.tagged_union_schema(
            choices,
            discriminator="type",
            custom_error_type="unknown_component",
            custom_error_message=f"unknown {self.kind} type",
            custom_error_context={"kind": self.kind, "registered": ", ".join(self.names())},
        )


def load_plugins() -> None:
    """Import every entry point of group ``detcli.plugins`` once; each registers its components."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must name itself, not crash somewhere later
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
        log.info("loaded plugin %s (%s)", ep.name, ep.value)



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
    load_plugins()
    if _built_generation == generation:
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
    _built_generation = generation

BACKBONES: Registry = Registry("backbone", "nn.Module; forward(images (N,3,H,W)) -> tuple of feature maps")
NECKS: Registry = Registry("neck", "nn.Module; forward(tuple of feature maps) -> tuple of feature maps")
HEADS: Registry = Registry("head", "nn.Module; forward(features) -> raw per-level outputs; loss(); predict()")
DETECTORS: Registry = Registry("detector", "nn.Module; loss(images, targets) -> dict; predict(images) -> detections")
LOSSES: Registry = Registry("loss", "nn.Module; forward(pred, target, weight=None, avg_factor=None) -> Tensor")
PRIOR_GENERATORS: Registry = Registry("prior generator", "grid_priors(featmap_sizes) -> list of (H*W*A, 4)")
ASSIGNERS: Registry = Registry("assigner", "assign(priors, gt...) -> AssignResult")
SAMPLERS: Registry = Registry("sampler", "sample(assign_result, ...) -> SamplingResult")
BBOX_CODERS: Registry = Registry("bbox coder", "encode(priors, gt) -> deltas; decode(priors, deltas) -> boxes")
DATASETS: Registry = Registry("dataset", "torch Dataset of dict samples")
TRANSFORMS: Registry = Registry("transform", "__call__(results: dict) -> dict")
HOOKS: Registry = Registry("hook", "engine hook with before/after run, epoch and iteration points")
ROI_EXTRACTORS: Registry = Registry(
    "RoI extractor", "nn.Module; forward(feature maps, rois (R, 5)) -> RoI features (R, C, S, S)")
ROI_HEADS: Registry = Registry(
    "RoI head", "nn.Module; loss(feats, proposals, images, targets) -> dict; predict(...) -> detections")
BBOX_HEADS: Registry = Registry(
    "RoI box head", "nn.Module; forward(RoI features (R, C, S, S)) -> (class logits (R, K+1), deltas)")
MASK_HEADS: Registry = Registry(
    "RoI mask head", "nn.Module; forward(RoI features (R, C, S, S)) -> mask logits (R, K or 1, 2S, 2S)")

POSITIONAL_ENCODINGS: Registry = Registry(
    "positional encoding", "nn.Module; forward(padding mask (N, h, w) bool) -> (N, C, h, w)")
ATTENTIONS: Registry = Registry(
    "attention", "nn.Module; forward(query (N, Q, D), value (N, S, D), ...) -> (N, Q, D) with the residual")
MATCH_COSTS: Registry = Registry(
    "match cost", "__call__(query scores/boxes, GT, img_shapes) -> (N, Q, G) cost of each pairing")

BackboneConfig = Annotated[Schema, BACKBONES]
NeckConfig = Annotated[Schema, NECKS]
HeadConfig = Annotated[Schema, HEADS]
DetectorConfig = Annotated[Schema, DETECTORS]
LossConfig = Annotated[Schema, LOSSES]
PriorGeneratorConfig = Annotated[Schema, PRIOR_GENERATORS]
AssignerConfig = Annotated[Schema, ASSIGNERS]
SamplerConfig = Annotated[Schema, SAMPLERS]
BBoxCoderConfig = Annotated[Schema, BBOX_CODERS]
DatasetConfig = Annotated[Schema, DATASETS]
TransformConfig = Annotated[Schema, TRANSFORMS]
HookConfig = Annotated[Schema, HOOKS]
RoIExtractorConfig = Annotated[Schema, ROI_EXTRACTORS]
RoIHeadConfig = Annotated[Schema, ROI_HEADS]
BBoxHeadConfig = Annotated[Schema, BBOX_HEADS]
MaskHeadConfig = Annotated[Schema, MASK_HEADS]

ALL_REGISTRIES = (
    BACKBONES, NECKS, HEADS, DETECTORS, LOSSES, PRIOR_GENERATORS, ASSIGNERS, SAMPLERS,
    BBOX_CODERS, DATASETS, TRANSFORMS, HOOKS, ROI_EXTRACTORS, ROI_HEADS, BBOX_HEADS, MASK_HEADS,
    POSITIONAL_ENCODINGS, MATCH_COSTS, ATTENTIONS,
)
