"""det: an object-detection toolkit built from registered components and typed TOML configs.

``import detcli`` stays light (no torch): ``load_config`` reads and validates a TOML config;
``build_detector`` (imported on first use) turns its ``model`` into an ``nn.Module``::

    cfg = detcli.load_config("presets/retinanet_r50.toml").cfg
    model = detcli.build_detector(cfg.model)

``Detector`` (also imported on first use) runs a trained model on images::

    detector = detcli.Detector.from_checkpoint("presets/retinanet_tiny_synth.toml", "model.pth")
    dets = detector("image.jpg")  # boxes, scores, labels in original-image pixels
"""

from __future__ import annotations

from typing import Any

from detcli.config import load_config

__all__ = ["Detector", "build_detector", "load_config"]


def __getattr__(name: str) -> Any:
    if name == "build_detector":
        from detcli.models.build import build_detector

        return build_detector
    if name == "Detector":
        from detcli.inference import Detector

        return Detector
    raise AttributeError(f"module 'detcli' has no attribute {name!r}")
