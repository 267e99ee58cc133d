"""The tiny RTMDet preset learns on the synthetic dataset (``train_detector``, CPU).

The engine tests' tiny setting (24 synthetic images at 128 pixels, AdamW;
:mod:`tests.engine.conftest`) on ``presets/rtmdet_tiny_synth.toml`` -- CSPNeXt at widen_factor
0.125, PAFPN and a one-conv head at 32 channels. To make the run shorter, AdamW runs at lr
0.004 instead of 0.001, ten times lower after epoch 20, for 24 epochs of 6 iterations instead
of 40. Measured with torch 2.14 on CPU, one thread, seeds 0-3: mean loss 2.16-2.23 in the
first epoch, ratio last / first 0.42-0.48; bbox_mAP 0.21, 0.17, 0.17, 0.32 and bbox_mAP_50
0.46-0.77 after 24 epochs. After 2 epochs (seed 0): bbox_mAP 0.0016, bbox_mAP_50 0.014, loss
ratio 0.95. The floors sit about a third under the worst seed (these short runs are chaotic: a
floor near the worst seed fails in another environment). Seeds 4 and 5, run after the floors
were set as a check: bbox_mAP 0.23 and 0.15, bbox_mAP_50 0.50 and 0.40, loss ratio 0.46 and
0.51. About 8-10 s of CPU time a run. The
earlier run (lr 0.001, 40 epochs) measured, on seed 0, bbox_mAP 0.14, bbox_mAP_50 0.41 and a
loss ratio of 0.40 in 15 s of CPU time (floors 0.06 / 0.2 / 0.7).
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, TINY_PRESET, tiny_config_text

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 24
PRESET = ROOT / "presets" / "rtmdet_tiny_synth.toml"
SHORTER = ["optimizer.lr=0.004", "lr_config.step=[20]"]
# The floors sit about a third under the worst measured seed (module docstring).
LOSS_RATIO, MAP_FLOOR, MAP50_FLOOR = 0.65, 0.11, 0.3


def test_tiny_rtmdet_trains_to_its_map_floor(synth, tmp_path):
    text = tiny_config_text(synth).replace(str(TINY_PRESET), str(PRESET))
    text = text.replace("[model.backbone]\nbase_channels = 8", "[model.backbone]")  # a ResNet key
    path = tmp_path / "rtmdet.toml"
    path.write_text(text)
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                "log_config.interval=6", "checkpoint_config.interval=100",
                                *SHORTER])
    assert loaded.cfg.model.type == "RTMDet"
    assert loaded.cfg.optimizer.lr == 0.004
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
