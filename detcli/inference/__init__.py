"""Inference on images: the config's test pipeline, then a PyTorch or onnxruntime model.

:class:`Detector` is the public entry point (also ``from detcli import Detector``).
"""

from detcli.inference.detector import Detector, resolve_classes
from detcli.inference.preprocess import Preprocessor

__all__ = ["Detector", "Preprocessor", "resolve_classes"]
