"""The tiny Faster R-CNN preset learns on the synthetic dataset (``train_detector``, CPU).

The run is the engine tests' tiny setting (24 synthetic images at 128 pixels, an eighth-width
ResNet-18, 32-channel FPN; :mod:`tests.engine.conftest`) on
``presets/faster_rcnn_tiny_synth.toml`` with a 32-channel RPN and a 128-wide box head. To make
the run shorter, the RoI head samples 64 RoIs an image instead of 256 and AdamW runs at lr 0.002
instead of 0.001, ten times lower after epoch 20; 24 epochs of 6 iterations (Mask R-CNN's test,
tests/engine/test_train_mask_rcnn.py, does the same).
Measured with torch 2.14 on CPU, one thread, seeds 0-3: mean loss 1.89-2.04 in the first epoch,
ratio last / first 0.36-0.41; bbox_mAP 0.37, 0.37, 0.32, 0.32 and bbox_mAP_50 0.75-0.84 after
24 epochs. After 2 epochs (seed 0): bbox_mAP 0.0005, bbox_mAP_50 0.005, loss ratio 0.70. The
floors sit about a third under the worst seed (these short runs are chaotic: a floor near the
worst seed fails in another environment). Seeds 4 and 5, run after the floors were set as a
check: bbox_mAP 0.29 and 0.32, bbox_mAP_50 0.85 and 0.71, loss ratio 0.37 and 0.43. About 11-12 s
of CPU time a run. The earlier run (256
RoIs, lr 0.001, 30 epochs) measured bbox_mAP 0.38-0.44, bbox_mAP_50 0.76-0.80 and a loss ratio
of 0.21-0.26 (seeds 0-2; seed 0 remeasured beside the new run: 0.35, 0.77, 0.22) in 25 s of CPU
time; the loss ratio's floor is higher because a smaller sample's loss falls less.
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, two_stage_config_text

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = ROOT / "presets" / "faster_rcnn_tiny_synth.toml"
EPOCHS = 24
SHORTER = ["model.train_cfg.rcnn.sampler.num=64", "optimizer.lr=0.002", "lr_config.step=[20]"]
# The floors sit about a third under the worst measured seed (module docstring).
LOSS_RATIO, MAP_FLOOR, MAP50_FLOOR = 0.55, 0.21, 0.5

TWO_STAGE_HEADS = """[model.rpn_head]
feat_channels = 32
[model.roi_head.bbox_head]
fc_out_channels = 128
"""


def faster_rcnn_config_text(synth) -> str:
    return two_stage_config_text(synth, PRESET, heads=TWO_STAGE_HEADS)


def test_tiny_faster_rcnn_trains_to_its_map_floor(synth, tmp_path):
    path = tmp_path / "faster_rcnn_tiny.toml"
    path.write_text(faster_rcnn_config_text(synth))
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                "log_config.interval=6", "checkpoint_config.interval=100",
                                *SHORTER])
    assert loaded.cfg.model.type == "FasterRCNN"
    assert loaded.cfg.model.train_cfg.rcnn.sampler.num == 64
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
