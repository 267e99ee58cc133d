"""Registries: pairing, lookup errors with suggestions, plugins, and late registration."""

import importlib.metadata
import sys
import types
from typing import Annotated, Literal

import pytest

from detcli import registry as reg
from detcli.config.loader import validate_tree
from detcli.config.schema import Schema
from detcli.errors import ConfigError, PluginError, RegistryError
from detcli.registry import Registry

THINGS = Registry("thing", "test-only")


class AlphaConfig(Schema):
    type: Literal["Alpha"] = "Alpha"
    size: int = 1


@THINGS.register(AlphaConfig)
class Alpha:
    def __init__(self, *, size: int = 1, scale: int = 1):
        self.size, self.scale = size, scale

    @classmethod
    def from_config(cls, cfg, **derived):
        return cls(size=cfg.size, **derived)


class HolderConfig(Schema):
    thing: Annotated[Schema, THINGS]


def test_build_passes_derived_values():
    thing = THINGS.build(AlphaConfig(size=3), scale=7)
    assert (type(thing), thing.size, thing.scale) == (Alpha, 3, 7)


def test_unknown_name_suggests():
    with pytest.raises(RegistryError, match=r"unknown thing type 'Alpah'; registered: Alpha\. Did you mean 'Alpha'\?"):
        THINGS.get("Alpah")


def test_duplicate_type_name_is_refused():
    class OtherAlpha(Schema):
        type: Literal["Alpha"] = "Alpha"

    with pytest.raises(RegistryError, match="already registered"):
        THINGS.add_config(OtherAlpha)


def test_config_without_type_literal_is_refused():
    class NoType(Schema):
        size: int = 1

    with pytest.raises(RegistryError, match="needs a field"):
        THINGS.add_config(NoType)


def test_component_registered_after_first_validation_validates():
    assert validate_tree({"thing": {"type": "Alpha"}}, HolderConfig).thing.size == 1

    class BetaConfig(Schema):
        type: Literal["Beta"] = "Beta"
        depth: int = 2

    THINGS.add_config(BetaConfig)
    assert validate_tree({"thing": {"type": "Beta", "depth": 5}}, HolderConfig).thing.depth == 5
    with pytest.raises(ConfigError) as info:
        validate_tree({"thing": {"type": "Betta"}}, HolderConfig)
    assert info.value.issues[0].hint == "did you mean 'Beta'?"


class _EntryPoint:
    def __init__(self, name, value, loader):
        self.name, self.value, self._loader = name, value, loader

    def load(self):
        return self._loader()


def _fake_plugins(monkeypatch, *eps):
    monkeypatch.setattr(reg, "_plugins_loaded", False)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: list(eps) if group == reg.PLUGIN_GROUP else [])


def test_plugin_entry_point_registers_components(monkeypatch):
    def load_plugin():
        module = types.ModuleType("det_test_plugin")

        class GammaConfig(Schema):
            type: Literal["Gamma"] = "Gamma"

        THINGS.add_config(GammaConfig)
        sys.modules["det_test_plugin"] = module
        return module

    _fake_plugins(monkeypatch, _EntryPoint("gamma", "det_test_plugin", load_plugin))
    assert validate_tree({"thing": {"type": "Gamma"}}, HolderConfig).thing.type == "Gamma"


def test_broken_plugin_names_itself(monkeypatch):
    def boom():
        raise ImportError("No module named 'missing_dep'")

    _fake_plugins(monkeypatch, _EntryPoint("broken", "broken_pkg.mod", boom))
    with pytest.raises(PluginError, match=r"plugin 'broken' \(broken_pkg.mod\) failed to load: No module named 'missing_dep'"):
        reg.load_plugins()
