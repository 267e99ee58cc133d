"""det: an object-detection toolkit built from registered components and typed TOML configs.

``import detcli`` stays light (no torch): ``load_config`` reads and validates a TOML config;
``build_detector`` turns its ``model`` into an ``nn.Module``::

    cfg = detcli.load_config("presets/retinanet_r50.toml").cfg
    model = detcli.build_detector(cfg.model)

``Detector`` (also imported on first use) runs a trained model on images::

    detector = detcli.Detector.from_checkpoint("presets/retinanet_tiny_synth.toml", "model.pth")
    dets = detector("image.jpg")  # boxes, scores, labels in original-image pixels
"""

from __future__ import annotations

from typing import Any

__all__ = ["Detector", "build_detector", "load_config"]


# A documented exception to module-level imports (tests/test_import_layering.py): the
# public names load on first use (PEP 562), because each needs torch -- ``load_config``
# validates against a schema assembled from every registered component -- and
# ``import detcli`` (or the CLI reading a torch-free module) must not pay for that.
def __getattr__(name: str) -> Any:
    if name == "load_config":
        from detcli.config.loader import load_config

        return load_config
    if name == "build_detector":
        from detcli.models.build import build_detector

        return build_detector
    if name == "Detector":
        from detcli.inference.detector import Detector

        return Detector
    raise AttributeError(f"module 'detcli' has no attribute {name!r}")
