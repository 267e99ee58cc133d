"""The model a view's ``--checkpoint`` names (``det viz assign``, ``det viz attention``).

Every view that runs a trained model builds it the same way: the config's detector, asked
first whether the view applies to it (``check``: the detector, narrowed to the type the view
needs, or a DetError saying which detectors it is for), then the checkpoint's weights with
its ``meta.classes`` checked against the config's class names
(:func:`~detcli.engine.tester.load_test_checkpoint`: CheckpointError when it does not fit),
in eval mode on the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

from torch import nn

from detcli.engine.device import resolve_device
from detcli.engine.tester import load_test_checkpoint
from detcli.models.build import build_detector

ModelT = TypeVar("ModelT", bound=nn.Module)


def checkpoint_model(cfg: Any, checkpoint: str | Path, check: Callable[[nn.Module], ModelT],
                     class_names: Sequence[str] = (),
                     device: Optional[str] = "cpu") -> ModelT:
    """``checkpoint``'s model of the config ``cfg`` (module docstring): ``check(model)`` before
    the weights load, then eval mode on ``device``. No ``class_names``: none are checked."""
    model = check(build_detector(cfg.model))
    load_test_checkpoint(model, checkpoint, class_names=list(class_names) or None)
    model.eval().to(resolve_device(device))
    return model
