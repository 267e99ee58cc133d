"""Components are cheap to add (#16 item 6): one generic build path, defaults in one place.

Every registered component builds from its default config through ``Registry.build``; a
``from_config`` that only copies fields is not allowed to come back; a constructor default that
disagrees with its config model's is refused at registration.
"""

import ast
import inspect
import textwrap
from typing import Literal

import pytest
from pydantic import Field

import detcli.data.build  # noqa: F401  (registers datasets and transforms)
import detcli.engine.build  # noqa: F401  (registers hooks)
import detcli.models.build  # noqa: F401  (registers models and task modules)
from detcli.config.loader import load_config
from detcli.config.schema import Maybe, Schema
from detcli.errors import RegistryError
from detcli.registry import (
    ALL_REGISTRIES, ASSIGNERS, DATASETS, Registry, default_mismatches, ensure_current, fields_of,
)

# The fields a config model requires (no default), per type name: the smallest valid values.
REQUIRED = {
    "MlvlPointGenerator": dict(strides=[8, 16]),
    "AnchorGenerator": dict(strides=[8, 16], ratios=[1.0], scales=[4.0]),
    "RetinaHead": dict(num_classes=3), "ATSSHead": dict(num_classes=3), "FCOSHead": dict(num_classes=3),
    "RTMDetSepBNHead": dict(num_classes=3),
    "Shared2FCBBoxHead": dict(num_classes=3), "FCNMaskHead": dict(num_classes=3),
    "DETRHead": dict(num_classes=3, embed_dims=8),
    "DeformableDETRHead": dict(num_classes=3, embed_dims=8, share_pred_layer=False,
                               num_pred_layer=2, as_two_stage=False),
    "DINOHead": dict(num_classes=3, embed_dims=8, share_pred_layer=False, num_pred_layer=3,
                     as_two_stage=True),
    "SingleRoIExtractor": dict(featmap_strides=[4, 8]),
    "Pad": dict(size_divisor=32),
    "Collect": dict(keys=["img"]),
    "ImageToTensor": dict(keys=["img"]),
    "RandomCrop": dict(crop_size=[8, 8]),
    "RandomResize": dict(scale=[32, 32]),
    "RandomChoiceResize": dict(scales=[(32, 32)]),
    "RandomChoice": dict(transforms=[[{"type": "RandomFlip"}], []]),
    "PipelineSwitchHook": dict(switch_epoch=1, switch_pipeline=[{"type": "LoadImageFromFile"}]),
    "MultiScaleFlipAug": dict(transforms=[], img_scale=[(32, 32)]),
    "EarlyStoppingHook": dict(monitor="bbox_mAP"),
    "Normalize": dict(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0]),
}
# The channels a detector's config fills in when it resolves (detcli.models.channels), per kind:
# a component alone is given them in its config, as that phase would.
CONNECTED = {"head": dict(in_channels=8), "RoI box head": dict(in_channels=8),
             "RoI mask head": dict(in_channels=8), "neck": dict(in_channels=[8, 16])}


def components():
    ensure_current()
    for registry in ALL_REGISTRIES:
        for name in registry.names():
            yield pytest.param(registry, name, id=f"{registry.kind}:{name}")


# A detector is all sub-configs: the tiny preset of its family, under its own type name.
PRESET = {"DETR": "detr", "DeformableDETR": "deformable_detr", "RetinaNet": "retinanet", "SingleStageDetector": "retinanet", "FCOS": "fcos",
          "ATSS": "atss", "FasterRCNN": "faster_rcnn", "TwoStageDetector": "faster_rcnn",
          "MaskRCNN": "mask_rcnn", "CascadeRCNN": "cascade_rcnn", "RTMDet": "rtmdet",
          "DINO": "dino"}


def default_config(registry: Registry, name: str) -> Schema:
    model = registry.config(name)
    if name in PRESET:
        preset = load_config(f"{PRESET[name]}_tiny_synth", []).cfg.model
        return model(**{**fields_of(preset), "type": name})
    if name == "StandardRoIHead":
        return load_config("faster_rcnn_tiny_synth", []).cfg.model.roi_head
    if name == "CascadeRoIHead":
        return load_config("cascade_rcnn_tiny_synth", []).cfg.model.roi_head
    required = {k for k, f in model.model_fields.items() if f.is_required() and k != "type"}
    given = REQUIRED.get(name, {})
    missing = required - set(given)
    if missing:
        pytest.fail(f"{name} requires {sorted(missing)}: add them to REQUIRED")
    return model(**given)


@pytest.mark.parametrize("registry,name", list(components()))
def test_every_component_builds_from_its_default_config_through_the_one_path(registry, name):
    cls = registry.get(name)
    if registry is DATASETS:  # reads its annotation file: check the call, do not make it
        cfg = registry.config(name)(ann_file="a.json", img_prefix="img/", classes=["a"])
        inspect.signature(cls).bind(**fields_of(cfg), on_bad="stop")
        assert getattr(cls, "from_config", None) is None
        return
    cfg = default_config(registry, name)
    # a query head's width is embed_dims (DETR's config derives it), not in_channels
    unset = {k: v for k, v in CONNECTED.get(registry.kind, {}).items()
             if k in type(cfg).model_fields and getattr(cfg, k) is None}
    built = registry.build(cfg.model_copy(update=unset))
    assert type(built) is cls


@pytest.mark.parametrize("registry,name", list(components()))
def test_no_component_is_handed_channels_when_it_is_built(registry, name):
    """Channels are derived in one phase, the config's: a from_config takes no in_channels."""
    own = getattr(registry.get(name), "from_config", None)
    if own is not None:
        assert "in_channels" not in inspect.signature(own).parameters, (
            f"{registry.get(name).__name__}.from_config takes in_channels: read it from the "
            "resolved config (detcli.models.channels connects it)")


def test_build_passes_every_field_to_the_constructor():
    assigner = ASSIGNERS.build(ASSIGNERS.config("MaxIoUAssigner")(
        pos_iou_thr=0.6, neg_iou_thr=0.3, min_pos_iou=0.2, match_low_quality=False))
    assert (assigner.pos_iou_thr, assigner.neg_iou_thr, assigner.min_pos_iou,
            assigner.match_low_quality) == (0.6, 0.3, 0.2, False)


def is_trivial(func) -> bool:
    """A from_config whose body is one ``return cls(...)`` of the config's fields: every argument
    is ``cfg.x``, ``**derived``, ``cfg.model_dump(...)``, a copy (list/tuple/dict) or a
    comprehension over ``cfg`` -- nothing built, renamed to another value, derived or checked."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    body = tree.body[0].body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if len(body) != 1 or not isinstance(body[0], ast.Return):
        return False
    call = body[0].value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "cls"):
        return False
    copying = {"list", "tuple", "dict", "model_dump", "config_kwargs"}
    for node in ast.walk(call):
        if isinstance(node, ast.Call) and node is not call:
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name not in copying:
                return False
    return True


@pytest.mark.parametrize("registry,name", list(components()))
def test_no_from_config_only_copies_fields(registry, name):
    own = getattr(registry.get(name), "from_config", None)
    if own is not None:
        assert not is_trivial(own), (
            f"{registry.get(name).__name__}.from_config only copies config fields: delete it, "
            f"Registry.build does that")


def test_the_trivial_rule_tells_copying_from_building():
    class Copies:
        @classmethod
        def from_config(cls, cfg, **derived):
            return cls(**cfg.model_dump(exclude={"type"}), size=list(cfg.size), **derived)

    class Builds:
        @classmethod
        def from_config(cls, cfg, **derived):
            return cls(loss=ASSIGNERS.build(cfg.assigner), **derived)

    class Checks:
        @classmethod
        def from_config(cls, cfg, **derived):
            if cfg.size < 0:
                raise ValueError("size")
            return cls(size=cfg.size)

    assert is_trivial(Copies.from_config)
    assert not is_trivial(Builds.from_config)
    assert not is_trivial(Checks.from_config)


@pytest.mark.parametrize("registry,name", list(components()))
def test_constructor_defaults_agree_with_the_config_model(registry, name):
    assert default_mismatches(registry.config(name), registry.get(name)) == []


THINGS = Registry("thing", "test-only")


class GammaConfig(Schema):
    type: Literal["Gamma"] = "Gamma"
    size: int = Field(3, ge=1)
    sizes: list[int] = [1, 2]
    on: bool = True


def test_a_constructor_default_that_disagrees_is_refused_at_registration():
    class Gamma:
        def __init__(self, *, size: int = 4, sizes: tuple[int, ...] = (1, 2), on: bool = True):
            pass

    with pytest.raises(RegistryError, match=r"size: Gamma.__init__ has 4, GammaConfig has 3"):
        THINGS.register(GammaConfig)(Gamma)
    assert "Gamma" not in THINGS


def test_equal_defaults_a_tuple_for_a_list_and_no_default_are_accepted():
    class Gamma:
        def __init__(self, *, size: int, sizes: tuple[int, ...] = (1, 2), on: bool = True):
            self.size, self.sizes, self.on = size, sizes, on

    THINGS.register(GammaConfig)(Gamma)
    built = THINGS.build(GammaConfig(size=5))
    assert (built.size, built.sizes, built.on) == (5, [1, 2], True)


def test_true_and_one_are_different_defaults():
    class OnConfig(Schema):
        type: Literal["On"] = "On"
        on: bool = True

    class On:
        def __init__(self, *, on: int = 1):
            pass

    assert default_mismatches(OnConfig, On) == ["on: On.__init__ has 1, OnConfig has True"]


def test_fields_of_is_shallow_and_copies_containers():
    class InnerConfig(Schema):
        type: Literal["Inner"] = "Inner"
        k: int = 1

    class OuterConfig(Schema):
        type: Literal["Outer"] = "Outer"
        inner: InnerConfig = InnerConfig()
        sizes: list[int] = [1, 2]

    cfg = OuterConfig()
    fields = fields_of(cfg)
    assert set(fields) == {"inner", "sizes"}
    assert fields["inner"] is cfg.inner  # a sub-config stays a config object
    assert fields["sizes"] == [1, 2] and fields["sizes"] is not cfg.sizes


def settings(part) -> dict:
    """A built part's plain settings (numbers, strings, flags, sequences of them), for comparing."""
    plain = (int, float, str, bool, type(None))
    return {k: v for k, v in sorted(vars(part).items()) if not k.startswith("_") and (
        isinstance(v, plain) or isinstance(v, (list, tuple)) and all(isinstance(x, plain) for x in v))}


@pytest.mark.parametrize("registry,name", [
    (registry, name) for registry in ALL_REGISTRIES if registry.kind in ("head", "RoI box head")
    for name in registry.names()])
def test_a_head_built_without_its_parts_gets_the_config_defaults(registry, name):
    """A head's constructor builds the parts it is not given (anchors, coder, losses, norms)
    from the same defaults as its config model: the two heads have the same layers and parts."""
    ensure_current()
    cfg = default_config(registry, name).model_copy(update=CONNECTED[registry.kind])
    from_cfg = registry.build(cfg)
    cls = registry.get(name)
    required = {k: getattr(cfg, k) for k, p in inspect.signature(cls).parameters.items()
                if p.default is inspect.Parameter.empty and k in type(cfg).model_fields}
    direct = cls(**required)
    assert str(direct) == str(from_cfg)
    for part in ("prior_generator", "bbox_coder", "loss_cls", "loss_bbox", "loss_centerness"):
        if hasattr(from_cfg, part):
            mine, theirs = getattr(direct, part), getattr(from_cfg, part)
            assert (type(mine), settings(mine)) == (type(theirs), settings(theirs)), part


def test_none_for_a_sub_config_is_a_default_only_where_the_config_cannot_be_none():
    class PartConfig(Schema):
        type: Literal["Part"] = "Part"
        k: int = 1

    class RequiredPart(Schema):
        type: Literal["RequiredPart"] = "RequiredPart"
        part: PartConfig = Field(default_factory=PartConfig)

    class OptionalPart(Schema):  # None means "off" here, so the default must be the config's
        type: Literal["OptionalPart"] = "OptionalPart"
        part: Maybe[PartConfig] = Field(default_factory=PartConfig)

    class Builds:
        def __init__(self, *, part=None):
            pass

    assert default_mismatches(RequiredPart, Builds) == []
    assert default_mismatches(OptionalPart, Builds) == [
        "part: Builds.__init__ has None, OptionalPart has PartConfig(type='Part', k=1)"]
