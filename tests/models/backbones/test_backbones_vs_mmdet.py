"""det's backbones against MMDetection 3.3's: the same state-dict names and shapes, and the same
outputs on the same weights (fixture made by tools/mmdet_fixtures/backbones.py; its DCNv2 runs
a plain-torch kernel written from mmcv's CUDA kernel, det's runs torchvision's)."""

from pathlib import Path

import pytest
import torch

from detcli.models import backbones  # noqa: F401  (registers the backbones)
from detcli.registry import BACKBONES
from tests.models.backbones.seeded import seeded_input, seeded_state

FIXTURE = torch.load(Path(__file__).with_name("mmdet_backbones.pt"), weights_only=False)


def build_ours(cfg: dict) -> torch.nn.Module:
    """det's backbone for an MMDetection backbone dict (tuples as TOML's lists)."""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    config = BACKBONES.config(values["type"]).model_validate(values)
    return BACKBONES.build(config)


@pytest.mark.parametrize("name", sorted(FIXTURE["names"]))
def test_state_dict_names_and_shapes_equal_mmdetection(name):
    entry = FIXTURE["names"][name]
    with torch.device("meta"):  # shapes only: no memory, no init work
        model = build_ours(entry["cfg"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(entry["shapes"])) == []
    assert sorted(set(entry["shapes"]) - set(ours)) == []
    assert ours == entry["shapes"]


@pytest.mark.parametrize("name", sorted(FIXTURE["outputs"]))
def test_outputs_equal_mmdetection_on_the_same_weights(name):
    entry = FIXTURE["outputs"][name]
    model = build_ours(entry["cfg"]).eval()
    model.load_state_dict(seeded_state(entry["shapes"], FIXTURE["seed"]), strict=True)
    with torch.no_grad():
        outs = model(seeded_input(FIXTURE["input"], FIXTURE["seed"]))
    assert len(outs) == len(entry["outs"])
    for got, expected in zip(outs, entry["outs"]):
        assert expected.abs().mean() > 0.1  # the features are not degenerate
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
