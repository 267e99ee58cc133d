"""The tiny Cascade R-CNN preset learns on the synthetic dataset (``train_detector``, CPU).

The run is the engine tests' tiny setting (24 synthetic images at 128 pixels, an eighth-width
ResNet-18, 32-channel FPN; :mod:`tests.engine.conftest`) on
``presets/cascade_rcnn_tiny_synth.toml`` with a 32-channel RPN and 128-wide box heads, for 30
epochs of 6 iterations, as Faster R-CNN's test (tests/engine/test_train_faster_rcnn.py).
Measured with torch 2.14 on CPU, one thread, seeds 0, 1 and 2: mean loss 2.58-2.88 in the
first epoch, 0.60-0.72 in the last (ratio 0.21-0.28); bbox_mAP 0.41-0.47 and bbox_mAP_50
0.79-0.90 after 30 epochs (Faster R-CNN's run: 0.38-0.44 and 0.76-0.80). About 4.5 min a run
on the 2 shared cores under a load of 10; the step is three box stages, about twice Faster
R-CNN's.
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, TINY_PRESET, one_thread, synth, tiny_config_text  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = ROOT / "presets" / "cascade_rcnn_tiny_synth.toml"
EPOCHS = 30
DENSE_HEAD = """[model.bbox_head]
feat_channels = 32
stacked_convs = 1
"""
SMALLER = ["model.rpn_head.feat_channels=32"] + [
    f"model.roi_head.bbox_head.{t}.fc_out_channels=128" for t in range(3)]
# The floors leave a margin under the worst measured seed (module docstring).
LOSS_RATIO, MAP_FLOOR, MAP50_FLOOR = 0.4, 0.3, 0.6


def cascade_config_text(synth) -> str:  # noqa: F811
    text = tiny_config_text(synth)
    assert DENSE_HEAD in text
    return text.replace(str(TINY_PRESET), str(PRESET)).replace(DENSE_HEAD, "")


def train(synth, tmp_path, seed: int = 0):  # noqa: F811
    path = tmp_path / "cascade_rcnn_tiny.toml"
    path.write_text(cascade_config_text(synth))
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                "log_config.interval=6", "checkpoint_config.interval=100",
                                f"seed={seed}", *SMALLER])
    assert loaded.cfg.model.type == "CascadeRCNN"
    assert loaded.cfg.model.roi_head.bbox_head[2].fc_out_channels == 128
    return train_detector(loaded, work_dir=tmp_path / "work", device="cpu")


def test_tiny_cascade_rcnn_trains_to_its_map_floor(synth, tmp_path):  # noqa: F811
    result = train(synth, tmp_path)
    assert (result.stop_reason, result.epoch) == ("finished", EPOCHS)
    records = [r for r in result.history if r["mode"] == "train"]
    assert {"loss_rpn_cls", "loss_rpn_bbox", "s0.loss_cls", "s1.loss_bbox", "s2.acc"} \
        <= set(records[0])
    # the total the trainer logs is the sum of every stage's losses (and the RPN's)
    first = records[0]
    parts = sum(v for k, v in first.items() if k.startswith(("loss_rpn", "s0.loss", "s1.loss",
                                                              "s2.loss")))
    assert first["loss"] == pytest.approx(parts, rel=1e-5)

    def mean_loss(epoch):
        losses = [r["loss"] for r in records if r["epoch"] == epoch]
        return sum(losses) / len(losses)

    assert mean_loss(EPOCHS) < LOSS_RATIO * mean_loss(1)
    (final,) = [r for r in result.history if r["mode"] == "val"]
    assert final["bbox_mAP"] > MAP_FLOOR
    assert final["bbox_mAP_50"] > MAP50_FLOOR
