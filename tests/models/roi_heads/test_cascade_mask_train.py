"""The tiny Cascade Mask R-CNN preset learns boxes and masks on the synthetic dataset
(``train_detector``, CPU).

The run is the engine tests' tiny setting (24 synthetic images at 128 pixels with their polygon
masks, an eighth-width ResNet-18, 32-channel FPN; :mod:`tests.engine.conftest`) on
``presets/cascade_mask_rcnn_tiny_synth.toml`` with a 32-channel RPN, 128-wide box heads and
32-channel mask heads, as the box-only cascade's test (test_cascade_train.py) and Mask R-CNN's
(tests/engine/test_train_mask_rcnn.py). To fit a short run, each stage samples 64 RoIs an image
instead of 256 (16 mask slots instead of 64, the step's costliest part: the mask heads and the
RoIAlign backward), AdamW runs at lr 0.003 instead of 0.001 and drops it tenfold after epoch
10; 12 epochs of 6 iterations (30 epochs at the preset's sampling took too long for CI).
Measured with torch 2.14 on CPU, one thread, seeds 0, 1, 2 and 3: mean loss 3.86-4.64 in the
first epoch (ratio last / first 0.39-0.44); segm_mAP 0.37, 0.32, 0.29, 0.22; segm_mAP_50
0.63-0.77; bbox_mAP 0.28, 0.22, 0.22, 0.15; bbox_mAP_50 0.44-0.75 after 12 epochs. After 2
epochs (seed 0): segm_mAP 0.0002, bbox_mAP 0.0001. The floors sit about a third under the worst
seed: these small runs are chaotic, and a floor at the edge fails in another environment.
Seeds 4 and 5, run after the floors were set as a check: segm_mAP 0.25 and 0.25, segm_mAP_50
0.61 and 0.72, bbox_mAP 0.17 and 0.18, bbox_mAP_50 0.55 and 0.68, loss ratio 0.45 and 0.42.
27-29 s of CPU time a run (75-125 s of wall time on the 2 shared cores under a load of 6).
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, one_thread, synth, two_stage_config_text  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = ROOT / "presets" / "cascade_mask_rcnn_tiny_synth.toml"
EPOCHS = 12
SMALLER = ["model.rpn_head.feat_channels=32", "model.roi_head.mask_head.conv_out_channels=32"] + [
    f"model.roi_head.bbox_head.{t}.fc_out_channels=128" for t in range(3)]
SHORTER = ["optimizer.lr=0.003", "lr_config.step=[10]"] + [
    f"model.train_cfg.rcnn.{t}.sampler.num=64" for t in range(3)]
# The floors sit about a third under the worst measured seed (module docstring).
LOSS_RATIO, SEGM_FLOOR, SEGM50_FLOOR, BBOX_FLOOR, BBOX50_FLOOR = 0.6, 0.15, 0.42, 0.1, 0.29


def cascade_mask_config_text(synth) -> str:  # noqa: F811
    return two_stage_config_text(synth, PRESET, masks=True)


def train(synth, tmp_path, seed: int = 0):  # noqa: F811
    path = tmp_path / "cascade_mask_rcnn_tiny.toml"
    path.write_text(cascade_mask_config_text(synth))
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                'evaluation.metric=["bbox", "segm"]',
                                "log_config.interval=6", "checkpoint_config.interval=100",
                                f"seed={seed}", *SMALLER, *SHORTER])
    cfg = loaded.cfg
    assert cfg.model.type == "CascadeRCNN" and cfg.model.roi_head.mask_head is not None
    assert [s.sampler.num for s in cfg.model.train_cfg.rcnn] == [64, 64, 64]
    return train_detector(loaded, work_dir=tmp_path / "work", device="cpu")


def test_tiny_cascade_mask_rcnn_trains_to_its_segm_floor(synth, tmp_path):  # noqa: F811
    result = train(synth, tmp_path)
    assert (result.stop_reason, result.epoch) == ("finished", EPOCHS)
    records = [r for r in result.history if r["mode"] == "train"]
    assert {"s0.loss_mask", "s1.loss_mask", "s2.loss_mask", "s2.loss_bbox"} <= set(records[0])

    def mean_loss(epoch):
        losses = [r["loss"] for r in records if r["epoch"] == epoch]
        return sum(losses) / len(losses)

    assert mean_loss(EPOCHS) < LOSS_RATIO * mean_loss(1)
    (final,) = [r for r in result.history if r["mode"] == "val"]
    assert final["segm_mAP"] > SEGM_FLOOR
    assert final["segm_mAP_50"] > SEGM50_FLOOR
    assert final["bbox_mAP"] > BBOX_FLOOR
    assert final["bbox_mAP_50"] > BBOX50_FLOOR
