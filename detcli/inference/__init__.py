"""Inference on images and videos: the config's test pipeline, then a PyTorch or onnxruntime
model.

:class:`Detector` is the public entry point (also ``from detcli import Detector``). The names
load on first use, so :mod:`detcli.inference.defaults` can be read without torch.
"""

from __future__ import annotations

from typing import Any

from detcli.inference.defaults import DEFAULT_SCORE_THR

__all__ = ["DEFAULT_SCORE_THR", "Detector", "Preprocessor", "resolve_classes"]


# A documented exception to module-level imports (tests/test_import_layering.py): the CLI reads
# detcli.inference.defaults while building its help, and importing this package must not pull
# in torch for that, so the names that need it load on first use (PEP 562).
def __getattr__(name: str) -> Any:
    if name in ("Detector", "resolve_classes"):
        from detcli.inference import detector

        return getattr(detector, name)
    if name == "Preprocessor":
        from detcli.inference.preprocess import Preprocessor

        return Preprocessor
    raise AttributeError(f"module 'detcli.inference' has no attribute {name!r}")
