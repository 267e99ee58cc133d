"""A trained model's predictions on the image ``det viz assign`` prepared, for an assigner that
ranks points by them (RTMDet's dynamic soft-label assigner): ``det viz assign --checkpoint``.

The checkpoint's detector (eval mode) runs on the prepared image, normalised again by the
pipeline's ``Normalize`` (:func:`detcli.analysis.proposals.network_input`, as for a two-stage
detector's proposals), and its dense head's raw outputs are what the head's assignment and the
cost explanation see (:mod:`detcli.analysis.soft_label_explain`). Only the image's padded area
is run, so the outputs cover the priors of that input exactly.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from detcli.analysis.assign_view import PredictionSource
from detcli.analysis.checkpoint_model import checkpoint_model
from detcli.analysis.pipeline_view import PipelineView
from detcli.analysis.proposals import network_input
from detcli.analysis.soft_label_explain import Predictions
from detcli.engine.device import resolve_device
from detcli.errors import DetError
from detcli.structures.dense import DenseOutputs

log = logging.getLogger(__name__)


def _single_stage(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` if a single-stage dense head predicts, else DetError."""
    if model.stages.two_stage or model.stages.dense_head is None:
        raise DetError(f"{type(model).__name__}: --checkpoint predictions are a single-stage "
                       "dense head's (RTMDet's)")
    return model


def checkpoint_predictions(cfg: Any, checkpoint: str | Path, pipeline: Sequence[Any],
                           class_names: Sequence[str] = (),
                           device: Optional[str] = "cpu") -> PredictionSource:
    """What :func:`~detcli.analysis.assign_view.visualize_assignment` calls on the prepared
    image: ``checkpoint``'s model (of the config ``cfg``) run on it -> :class:`Predictions`.
    The model is loaded once, when called (CheckpointError when it does not fit the config)."""

    @torch.no_grad()
    def run(view: PipelineView) -> Predictions:
        model = checkpoint_model(cfg, checkpoint, _single_stage, class_names, device)
        target = resolve_device(device)
        # network_input reads the view's fields as AssignmentView holds them (a list scale)
        as_listed = replace(view, scale_factor=[float(v) for v in view.scale_factor])
        images = network_input(as_listed, pipeline).to(target)
        outputs: DenseOutputs = model(images.tensor)
        outputs = DenseOutputs(*[None if part is None else [x.float().cpu() for x in part]
                                 for part in outputs])
        log.info("%s: the model's predictions on %s", checkpoint, view.filename)
        return Predictions(outputs, f"the predictions of {checkpoint}")

    return run
