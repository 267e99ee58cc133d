"""Typed TOML configs: schema base, loading with extends/overrides/provenance, diff.

The package itself holds only the pydantic base (:mod:`detcli.config.schema`), so a component
module importing ``Schema`` runs nothing else: loading a config (:mod:`detcli.config.loader`)
assembles the root schema from every registered component and sits above them.
"""

from detcli.config.schema import Maybe, Schema

__all__ = ["Maybe", "Schema"]
