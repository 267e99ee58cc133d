"""Typed TOML configs: schema base, loading with extends/overrides/provenance, diff."""

from detcli.config.loader import LoadedConfig, load_config
from detcli.config.schema import Maybe, Schema

__all__ = ["LoadedConfig", "Maybe", "Schema", "load_config"]
