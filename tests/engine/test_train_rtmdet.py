"""The tiny RTMDet preset learns on the synthetic dataset (``train_detector``, CPU).

The engine tests' tiny setting (24 synthetic images at 128 pixels, AdamW;
:mod:`tests.engine.conftest`) on ``presets/rtmdet_tiny_synth.toml`` -- CSPNeXt at widen_factor
0.125, PAFPN and a one-conv head at 32 channels -- for 40 epochs of 6 iterations. Measured
(torch on CPU, one thread, seed 0): mean loss 2.19 in the first epoch, 0.93 in the last;
bbox_mAP 0.188, bbox_mAP_50 0.460 (102 s on a 2-core machine loaded by 12 other processes).
The floors leave a margin of 2 to 3 below it.
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, TINY_PRESET, tiny_config_text

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 40
PRESET = ROOT / "presets" / "rtmdet_tiny_synth.toml"
LOSS_RATIO, MAP_FLOOR, MAP50_FLOOR = 0.7, 0.06, 0.2


def test_tiny_rtmdet_trains_to_its_map_floor(synth, tmp_path):
    text = tiny_config_text(synth).replace(str(TINY_PRESET), str(PRESET))
    text = text.replace("[model.backbone]\nbase_channels = 8", "[model.backbone]")  # a ResNet key
    path = tmp_path / "rtmdet.toml"
    path.write_text(text)
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                "log_config.interval=6", "checkpoint_config.interval=100"])
    assert loaded.cfg.model.type == "RTMDet"
    result = train_detector(loaded, work_dir=tmp_path / "work", device="cpu")

    assert (result.stop_reason, result.epoch) == ("finished", EPOCHS)
    train = [r for r in result.history if r["mode"] == "train"]
    assert {"loss_cls", "loss_bbox"} <= set(train[0])

    def mean_loss(epoch):
        losses = [r["loss"] for r in train if r["epoch"] == epoch]
        return sum(losses) / len(losses)

    (final,) = [r for r in result.history if r["mode"] == "val"]
    print(f"loss {mean_loss(1):.3f} -> {mean_loss(EPOCHS):.3f}, bbox_mAP {final['bbox_mAP']:.4f}, "
          f"bbox_mAP_50 {final['bbox_mAP_50']:.4f}")
    assert mean_loss(EPOCHS) < LOSS_RATIO * mean_loss(1)
    assert final["bbox_mAP"] > MAP_FLOOR
    assert final["bbox_mAP_50"] > MAP50_FLOOR
