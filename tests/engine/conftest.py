"""Shared by the training tests: one small synthetic dataset per session and a tiny config.

The tiny RetinaNet is ``presets/retinanet_tiny_synth.toml`` at 128 pixels with an eighth-width
ResNet-18, 32-channel FPN and a one-conv head: a training step takes a few hundredths of a
second on one CPU thread. Tests change it with ``--set``-style overrides.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detcli.config.loader import load_config
from detcli.data.synth import SynthDataset, make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY_PRESET = ROOT / "presets" / "retinanet_tiny_synth.toml"

NORM = ('{ type = "Normalize", mean = [123.675, 116.28, 103.53], std = [58.395, 57.12, 57.375], '
        'to_rgb = true }')


def tiny_config_text(synth: SynthDataset) -> str:
    train, val = synth.ann_file("train"), synth.ann_file("val")
    return f"""
extends = ["{TINY_PRESET}"]
seed = 0

[model.backbone]
base_channels = 8
[model.neck]
out_channels = 32
[model.bbox_head]
feat_channels = 32
stacked_convs = 1

[data]
samples_per_gpu = 4
workers_per_gpu = 0
test = false
[data.train]
ann_file = "{train}"
img_prefix = "{synth.img_prefix('train')}/"
pipeline = [
    {{ type = "LoadImageFromFile" }},
    {{ type = "LoadAnnotations", with_bbox = true }},
    {{ type = "Resize", img_scale = [128, 128], keep_ratio = true }},
    {{ type = "RandomFlip", flip_ratio = 0.5 }},
    {NORM},
    {{ type = "Pad", size_divisor = 32 }},
    {{ type = "DefaultFormatBundle" }},
    {{ type = "Collect", keys = ["img", "gt_bboxes", "gt_labels"] }},
]
[data.val]
ann_file = "{val}"
img_prefix = "{synth.img_prefix('val')}/"
pipeline = [
    {{ type = "LoadImageFromFile" }},
    {{ type = "MultiScaleFlipAug", img_scale = [128, 128], flip = false, transforms = [
        {{ type = "Resize", keep_ratio = true }},
        {{ type = "RandomFlip" }},
        {NORM},
        {{ type = "Pad", size_divisor = 32 }},
        {{ type = "ImageToTensor", keys = ["img"] }},
        {{ type = "Collect", keys = ["img"] }},
    ] }},
]

[optimizer]
type = "AdamW"
lr = 0.001
weight_decay = 0.05

[lr_config]
policy = "step"
warmup = "linear"
warmup_iters = 5
warmup_ratio = 0.1
step = [100]

[runner]
type = "EpochBasedRunner"
max_epochs = 2

[evaluation]
interval = 1
plots = false  # the end-of-run report (0.4 s); tests/engine/test_eval_plots.py turns it on

[log_config]
interval = 1
curves = false  # 0.4 s a drawing; tests/engine/test_curves_tensorboard.py turns it on
"""


DENSE_HEAD = """[model.bbox_head]
feat_channels = 32
stacked_convs = 1
"""  # the tiny config's RetinaNet head sizes, keys a two-stage model does not have


def two_stage_config_text(synth: SynthDataset, preset: Path, *, heads: str = "",
                          masks: bool = False) -> str:
    """The tiny config on a two-stage ``preset``: the RetinaNet head's sizes replaced by
    ``heads`` (TOML tables), and with ``masks`` the GT masks loaded and collected."""
    replacements = [(str(TINY_PRESET), str(preset)), (DENSE_HEAD, heads)]
    if masks:
        replacements += [("with_bbox = true }", "with_bbox = true, with_mask = true }"),
                         ('"gt_labels"]', '"gt_labels", "gt_masks"]')]
    text = tiny_config_text(synth)
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> SynthDataset:
    """24 training and 12 validation images of at most 128 pixels (shared by the session)."""
    root = tmp_path_factory.mktemp("engine-synth") / "synth"
    return make_synthetic_dataset(root, num_train=24, num_val=12, image_size=128, seed=0)


@pytest.fixture(scope="session")
def tiny_config_path(synth, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("engine-config") / "tiny.toml"
    path.write_text(tiny_config_text(synth))
    return path


@pytest.fixture
def tiny_config(tiny_config_path):
    """``tiny_config(*overrides)`` -> the loaded tiny config."""
    return lambda *overrides: load_config(tiny_config_path, list(overrides))


@pytest.fixture
def one_thread():
    """Training tests run on one intra-op thread: on a busy 2-core machine, torch's threads
    wait on each other and a tiny step gets tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
