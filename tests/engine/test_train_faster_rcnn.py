"""The tiny Faster R-CNN preset learns on the synthetic dataset (``train_detector``, CPU).

The run is the engine tests' tiny setting (24 synthetic images at 128 pixels, an eighth-width
ResNet-18, 32-channel FPN; :mod:`tests.engine.conftest`) on
``presets/faster_rcnn_tiny_synth.toml`` with a 32-channel RPN and a 128-wide box head, for 30
epochs of 6 iterations (about 18 s on one thread). Measured with torch 2.14 on CPU, one thread,
seeds 0, 1 and 2: mean loss 1.81-1.88 in the first epoch, 0.39-0.49 in the last (ratio 0.21-0.26);
bbox_mAP 0.38-0.44 and bbox_mAP_50 0.76-0.80 after 30 epochs.
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, TINY_PRESET, tiny_config_text

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = ROOT / "presets" / "faster_rcnn_tiny_synth.toml"
EPOCHS = 30
# The floors leave a margin under the worst measured seed (module docstring).
LOSS_RATIO, MAP_FLOOR, MAP50_FLOOR = 0.4, 0.25, 0.55

DENSE_HEAD = """[model.bbox_head]
feat_channels = 32
stacked_convs = 1
"""
TWO_STAGE_HEADS = """[model.rpn_head]
feat_channels = 32
[model.roi_head.bbox_head]
fc_out_channels = 128
"""


def faster_rcnn_config_text(synth) -> str:
    text = tiny_config_text(synth)
    assert DENSE_HEAD in text
    return text.replace(str(TINY_PRESET), str(PRESET)).replace(DENSE_HEAD, TWO_STAGE_HEADS)


def test_tiny_faster_rcnn_trains_to_its_map_floor(synth, tmp_path):
    path = tmp_path / "faster_rcnn_tiny.toml"
    path.write_text(faster_rcnn_config_text(synth))
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                "log_config.interval=6", "checkpoint_config.interval=100"])
    assert loaded.cfg.model.type == "FasterRCNN"
    result = train_detector(loaded, work_dir=tmp_path / "work", device="cpu")

    assert (result.stop_reason, result.epoch) == ("finished", EPOCHS)
    train = [r for r in result.history if r["mode"] == "train"]
    assert {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc"} <= set(train[0])

    def mean_loss(epoch):
        losses = [r["loss"] for r in train if r["epoch"] == epoch]
        return sum(losses) / len(losses)

    assert mean_loss(EPOCHS) < LOSS_RATIO * mean_loss(1)
    (final,) = [r for r in result.history if r["mode"] == "val"]
    assert final["bbox_mAP"] > MAP_FLOOR
    assert final["bbox_mAP_50"] > MAP50_FLOOR
