"""RTMDet's training recipe killed and resumed equals the run never interrupted, bit for bit:
a Mosaic pipeline that switches (PipelineSwitchHook) to a plain one at the epoch the run is
killed in, the flat-then-cosine lr from that epoch, ExpMomentumEMA, two persistent loader
workers. Same method as :mod:`tests.engine.test_resume_exact` (whose driver trains the
killed run): 14 iterations of 6 per epoch, killed after 10, resumed from iter_8.pth, inside
the second epoch, i.e. after the switch."""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.checkpoint import read_checkpoint
from detcli.engine.trainer import train_detector
from tests.engine.conftest import tiny_config_text
from tests.engine.test_resume_exact import ITER_RUN, assert_same_run, run_killed

TRAIN_STEPS = """    {{ type = "Resize", img_scale = [128, 128], keep_ratio = true }},
    {{ type = "RandomFlip", flip_ratio = 0.5 }},"""
MOSAIC_STEPS = """    { type = "Mosaic", img_scale = [64, 64] },
    { type = "RandomResize", scale = [128, 128], ratio_range = [0.5, 1.0], keep_ratio = true },
    { type = "RandomCrop", crop_size = [96, 96] },
    { type = "YOLOXHSVRandomAug" },
    { type = "RandomFlip", flip_ratio = 0.5 },"""
SCHEDULE = """
[lr_config]
policy = "FlatCosineAnnealing"
warmup = "linear"
warmup_iters = 3
warmup_ratio = 0.001
begin_epoch = 1
min_lr_ratio = 0.05

[[custom_hooks]]
type = "EMAHook"
ema_type = "ExpMomentumEMA"
momentum = 0.0002
update_buffers = true

[[custom_hooks]]
type = "PipelineSwitchHook"
switch_epoch = 1
switch_pipeline = [
    { type = "LoadImageFromFile" },
    { type = "LoadAnnotations", with_bbox = true },
    { type = "Resize", img_scale = [128, 128], keep_ratio = true },
    { type = "RandomFlip", flip_ratio = 0.5 },
    { type = "Normalize", mean = [123.675, 116.28, 103.53], std = [58.395, 57.12, 57.375], to_rgb = true },
    { type = "Pad", size_divisor = 32 },
    { type = "DefaultFormatBundle" },
    { type = "Collect", keys = ["img", "gt_bboxes", "gt_labels"] },
]
"""


def rtmdet_recipe_text(synth) -> str:
    text = tiny_config_text(synth)
    plain = TRAIN_STEPS.replace("{{", "{").replace("}}", "}")
    assert plain in text
    text = text.replace(plain, MOSAIC_STEPS, 1)
    start = text.index("[lr_config]")
    end = text.index("[runner]")
    return text[:start] + SCHEDULE + "\n" + text[end:]


@pytest.mark.usefixtures("one_thread")
def test_switch_cosine_ema_run_killed_and_resumed_equals_uninterrupted(synth, tmp_path):
    config = tmp_path / "rtm_recipe.toml"
    config.write_text(rtmdet_recipe_text(synth))
    overrides = [*ITER_RUN, "data.workers_per_gpu=2", "data.persistent_workers=true"]
    straight = tmp_path / "straight"
    train_detector(load_config(config, overrides), work_dir=straight, device="cpu")
    killed = tmp_path / "killed"
    run_killed(config, killed, overrides)
    resumed = train_detector(load_config(config, overrides), work_dir=killed, device="cpu",
                             resume="auto")
    assert "  restored epoch 1, iteration 8" in resumed.restored.lines()
    assert_same_run(straight, killed, "iter_14.pth")
    lrs = [r["lr"] for r in resumed.history if r["mode"] == "train"]
    assert lrs[-1] < lrs[0]  # iterations 9-14 are on the cosine part
    assert read_checkpoint(killed / "iter_14.pth")["ema"]["updates"] == 14
    straight_log = (straight / "train.log").read_text()
    assert "epoch 2: switching to the second training pipeline" in straight_log
    resumed_log = (killed / "train.log").read_text()
    assert "resumed in epoch 2, after PipelineSwitchHook.switch_epoch = 1" in resumed_log
