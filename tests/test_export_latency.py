"""``benchmarks/export_latency.py``'s model table: every entry's preset resolves and its
classifier bias (the knob that sets how many candidates reach NMS) is found, one conv for
RetinaNet, one per level for RTMDet. The timing itself is not run here (each export takes
10-30 s on 2 cores); docs/performance.md has its figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import detcli

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("export_latency", ROOT / "benchmarks" / "export_latency.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


@pytest.mark.parametrize("name,count", [("tiny", 1), ("rtmdet", 3)])
def test_the_classifier_biases_set_are_the_heads_own(name, count):
    preset, _, overrides, classifier = bench.MODELS[name]
    model = detcli.build_detector(detcli.load_config(preset, overrides=overrides).cfg.model)
    biases = bench.classifier_biases(model, classifier)
    assert len(biases) == count
    with torch.no_grad():
        for tensor in biases:
            tensor.fill_(-3.0)
    head = model.bbox_head
    convs = [head.retina_cls] if name == "tiny" else list(head.rtm_cls)
    assert all(bool((conv.bias == -3.0).all()) for conv in convs)


def test_every_model_of_the_table_resolves():
    assert set(bench.DEFAULT_MODELS) == set(bench.MODELS)
    for preset, size, overrides, _ in bench.MODELS.values():
        cfg = detcli.load_config(preset, overrides=overrides).cfg
        assert cfg.model.type in ("RetinaNet", "RTMDet") and size % 32 == 0
