"""The tiny Cascade R-CNN preset learns on the synthetic dataset (``train_detector``, CPU).

The run is the engine tests' tiny setting (24 synthetic images at 128 pixels, an eighth-width
ResNet-18, 32-channel FPN; :mod:`tests.engine.conftest`) on
``presets/cascade_rcnn_tiny_synth.toml`` with a 32-channel RPN and 128-wide box heads. To make
the run shorter, each stage samples 64 RoIs an image instead of 256 and AdamW runs at lr 0.002
instead of 0.001, ten times lower after epoch 17; 20 epochs of 6 iterations (as the Cascade
Mask R-CNN test, test_cascade_mask_train.py, and tests/engine/test_train_mask_rcnn.py do).
Measured with torch 2.14 on CPU, one thread, seeds 0-3: mean loss 2.62-3.06 in the first epoch,
ratio last / first 0.29-0.44; bbox_mAP 0.46, 0.41, 0.33, 0.43 and bbox_mAP_50 0.77-0.88 after
20 epochs. After 2 epochs (seed 0): bbox_mAP 0.0004, bbox_mAP_50 0.0009, loss ratio 0.65. The
floors sit about a third under the worst seed (these short runs are chaotic: a floor near the
worst seed fails in another environment). Seeds 4 and 5, run after the floors were set as a
check: bbox_mAP 0.44 and 0.45, bbox_mAP_50 0.76 and 0.89, loss ratio 0.42 and 0.37. About
15-18 s of CPU time a run; the step is three box stages. The earlier run (256 RoIs a stage,
lr 0.001, 30 epochs) measured bbox_mAP 0.41-0.47, bbox_mAP_50 0.79-0.90 and a loss ratio of
0.21-0.28 (seeds 0-2; seed 0 remeasured beside the new run: 0.43, 0.80, 0.26) in 61 s of CPU
time; the loss ratio's floor is higher because a smaller sample's loss falls less.
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, one_thread, synth, two_stage_config_text  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = ROOT / "presets" / "cascade_rcnn_tiny_synth.toml"
EPOCHS = 20
SMALLER = ["model.rpn_head.feat_channels=32"] + [
    f"model.roi_head.bbox_head.{t}.fc_out_channels=128" for t in range(3)]
SHORTER = ["optimizer.lr=0.002", "lr_config.step=[17]"] + [
    f"model.train_cfg.rcnn.{t}.sampler.num=64" for t in range(3)]
# The floors sit about a third under the worst measured seed (module docstring).
LOSS_RATIO, MAP_FLOOR, MAP50_FLOOR = 0.58, 0.22, 0.5


def cascade_config_text(synth) -> str:  # noqa: F811
    return two_stage_config_text(synth, PRESET)


def train(synth, tmp_path, seed: int = 0):  # noqa: F811
    path = tmp_path / "cascade_rcnn_tiny.toml"
    path.write_text(cascade_config_text(synth))
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                "log_config.interval=6", "checkpoint_config.interval=100",
                                f"seed={seed}", *SMALLER, *SHORTER])
    assert loaded.cfg.model.type == "CascadeRCNN"
    assert loaded.cfg.model.roi_head.bbox_head[2].fc_out_channels == 128
    assert [s.sampler.num for s in loaded.cfg.model.train_cfg.rcnn] == [64, 64, 64]
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
