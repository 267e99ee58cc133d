"""checkpoint_model: the one way the views build a --checkpoint's model -- the view's check
first, then the weights (a checkpoint of another shape refused), eval mode."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detcli.analysis.checkpoint_model import checkpoint_model
from detcli.config.loader import load_config
from detcli.engine.checkpoint import save_checkpoint
from detcli.errors import CheckpointError, DetError
from detcli.models.build import build_detector

CFG = load_config("retinanet_tiny_synth", []).cfg


def _any(model: nn.Module) -> nn.Module:
    return model


def _refuse(model: nn.Module) -> nn.Module:
    raise DetError(f"{type(model).__name__} is not what this view draws")


def test_the_checkpoints_weights_in_eval_mode(tmp_path):
    torch.manual_seed(3)
    saved = build_detector(CFG.model)
    path = save_checkpoint(tmp_path / "m.pth", saved, meta={"classes": ["a", "b", "c"]},
                           rng=False)
    model = checkpoint_model(CFG, path, _any, ["a", "b", "c"])
    assert not model.training and all(not m.training for m in model.modules())
    state, expected = model.state_dict(), saved.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert next(model.parameters()).device.type == "cpu"


def test_the_views_check_comes_before_the_weights(tmp_path):
    # the file does not exist: the refusal is the check's, not a CheckpointError
    with pytest.raises(DetError, match="RetinaNet is not what this view draws") as info:
        checkpoint_model(CFG, tmp_path / "missing.pth", _refuse)
    assert not isinstance(info.value, CheckpointError)


def test_a_checkpoint_of_another_model_is_a_checkpoint_error(tmp_path):
    other = load_config("retinanet_tiny_synth", ["model.bbox_head.num_classes=7"]).cfg.model
    path = save_checkpoint(tmp_path / "seven.pth", build_detector(other), rng=False)
    with pytest.raises(CheckpointError):
        checkpoint_model(CFG, path, _any)
