"""``evaluate``: run a model over a dataset's images and score its detections.

The tester (:mod:`detcli.engine.tester`) runs the model; :mod:`detcli.evaluation` scores the
detections against the dataset's GT. This module joins the two for the in-training evaluation
(:class:`~detcli.engine.hooks.eval_hook.EvalHook`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from detcli.engine.tester import run_inference
from detcli.evaluation.evaluator import Evaluator
from detcli.structures.detections import Detections


@dataclass
class Evaluated:
    """One evaluation: the evaluator's metrics and the detections they score."""

    metrics: dict[str, Any]
    detections: list[Detections]  # I, one per dataset image in order (every rank's gathered)


def evaluate(model: torch.nn.Module, loader: Any, evaluator: Evaluator,
             device: torch.device | str, *, tta: bool = False,
             progress: Callable[[int, int], None] | None = None) -> Evaluated:
    """Run ``model`` over ``loader`` (the images of the dataset ``evaluator`` scores, in order)
    and score the detections with ``evaluator``
    (:func:`~detcli.evaluation.evaluator.build_evaluator`).

    In a distributed run every rank runs its share, the detections are gathered, and every rank
    returns the same metrics and detections. ``progress(done, total)`` is called as images are
    done (this rank's share).
    """
    detections = run_inference(model, loader, device, tta=tta, progress=progress)
    return Evaluated(evaluator.evaluate(detections), list(detections))
