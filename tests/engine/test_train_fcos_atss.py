"""The tiny FCOS and ATSS presets learn on the synthetic dataset (``train_detector``, CPU).

Each run is the engine tests' tiny setting (24 synthetic images at 128 pixels, an eighth-width
ResNet-18, 32-channel FPN, one-conv head, AdamW; :mod:`tests.engine.conftest`) on
``presets/{fcos,atss}_tiny_synth.toml``, for 40 epochs of 6 iterations (about 7 s on one
thread). Measured with torch 2.14 on CPU, one thread, seeds 0, 1 and 2:

- FCOS: mean loss 7.0-7.1 in the first epoch, 1.1-1.2 in the last; bbox_mAP 0.12-0.16 and
  bbox_mAP_50 0.41-0.63 after 40 epochs (anchor-free from scratch starts slower: its IoU loss
  starts near -log(1/900), every box being 1 pixel);
- ATSS: mean loss 2.9 -> 1.0; bbox_mAP 0.30-0.37 and bbox_mAP_50 0.81-0.91.

The floors leave a margin of 2 to 3 below the worst measured seed.
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, TINY_PRESET, tiny_config_text

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 40
FLOORS = {  # preset: (loss ratio last / first epoch, bbox_mAP, bbox_mAP_50)
    "fcos_tiny_synth.toml": (0.4, 0.05, 0.15),
    "atss_tiny_synth.toml": (0.7, 0.12, 0.30),
}


@pytest.mark.parametrize("preset", sorted(FLOORS))
def test_tiny_variant_trains_to_its_map_floor(preset, synth, tmp_path):
    path = tmp_path / preset
    path.write_text(tiny_config_text(synth).replace(str(TINY_PRESET),
                                                    str(ROOT / "presets" / preset)))
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                "log_config.interval=6", "checkpoint_config.interval=100"])
    assert loaded.cfg.model.type == preset.split("_")[0].upper()
    result = train_detector(loaded, work_dir=tmp_path / "work", device="cpu")

    assert (result.stop_reason, result.epoch) == ("finished", EPOCHS)
    train = [r for r in result.history if r["mode"] == "train"]
    assert {"loss_cls", "loss_bbox", "loss_centerness"} <= set(train[0])

    def mean_loss(epoch):
        losses = [r["loss"] for r in train if r["epoch"] == epoch]
        return sum(losses) / len(losses)

    loss_ratio, map_floor, map50_floor = FLOORS[preset]
    assert mean_loss(EPOCHS) < loss_ratio * mean_loss(1)
    (final,) = [r for r in result.history if r["mode"] == "val"]
    assert final["bbox_mAP"] > map_floor
    assert final["bbox_mAP_50"] > map50_floor
