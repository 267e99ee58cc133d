"""The tiny Deformable DETR preset learns on the synthetic dataset (``train_detector``, CPU).

The engine tests' tiny setting (24 synthetic images at 128 pixels, AdamW;
:mod:`tests.engine.conftest`) on ``presets/deformable_detr_tiny_synth.toml`` -- box refinement,
ResNet-18 at an eighth of its width, 32 channels, 1 encoder and 2 decoder layers (2 points),
10 queries -- for 30 epochs of 6 iterations at lr 2e-3. Measured (torch on CPU, one thread,
seeds 0, 1, 2): mean loss 12.6-12.9 in the first epoch, 4.1-4.6 in the last (ratio 0.32-0.36);
bbox_mAP 0.031 / 0.033 / 0.017, bbox_mAP_50 0.157 / 0.186 / 0.086; about 27 s on a loaded
2-core machine. At lr 5e-4 it learns several times slower (seed 1: bbox_mAP 0.0005). The
floors sit about half of the worst seed.
"""

from __future__ import annotations

import re

import pytest

from detcli.config.loader import load_config
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, TINY_PRESET, tiny_config_text

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 30
PRESET = ROOT / "presets" / "deformable_detr_tiny_synth.toml"
LOSS_RATIO, MAP_FLOOR, MAP50_FLOOR = 0.5, 0.008, 0.04
ATTN = "embed_dims = 32, num_heads = 4, num_levels = 4, num_points = 2, dropout = 0.0"
FFN = "embed_dims = 32, feedforward_channels = 64, ffn_drop = 0.0"
MODEL = f"""
[model]
num_queries = 10
[model.backbone]
base_channels = 8
[model.neck]
out_channels = 32
[model.encoder]
num_layers = 1
layer_cfg.self_attn_cfg = {{ {ATTN} }}
layer_cfg.ffn_cfg = {{ {FFN} }}
[model.decoder]
num_layers = 2
layer_cfg.self_attn_cfg = {{ embed_dims = 32, num_heads = 4, dropout = 0.0 }}
layer_cfg.cross_attn_cfg = {{ {ATTN} }}
layer_cfg.ffn_cfg = {{ {FFN} }}
[model.positional_encoding]
num_feats = 16
[model.test_cfg]
max_per_img = 10
"""


def test_tiny_deformable_detr_trains_to_its_map_floor(synth, tmp_path):
    text = tiny_config_text(synth).replace(str(TINY_PRESET), str(PRESET))
    text = re.sub(r"\n\[model\.backbone\].*?\n(?=\[data\])", MODEL, text, flags=re.S)
    path = tmp_path / "deformable_detr.toml"
    path.write_text(text)
    loaded = load_config(path, [f"runner.max_epochs={EPOCHS}", f"evaluation.interval={EPOCHS}",
                                "log_config.interval=6", "checkpoint_config.interval=100",
                                "optimizer.lr=0.002", "optimizer.weight_decay=0.0001"])
    assert loaded.cfg.model.type == "DeformableDETR"
    result = train_detector(loaded, work_dir=tmp_path / "work", device="cpu")

    assert (result.stop_reason, result.epoch) == ("finished", EPOCHS)
    train = [r for r in result.history if r["mode"] == "train"]
    assert {"loss_cls", "loss_bbox", "loss_iou", "d0.loss_cls"} <= set(train[0])

    def mean_loss(epoch):
        losses = [r["loss"] for r in train if r["epoch"] == epoch]
        return sum(losses) / len(losses)

    (final,) = [r for r in result.history if r["mode"] == "val"]
    print(f"loss {mean_loss(1):.3f} -> {mean_loss(EPOCHS):.3f}, bbox_mAP {final['bbox_mAP']:.4f}, "
          f"bbox_mAP_50 {final['bbox_mAP_50']:.4f}")
    assert mean_loss(EPOCHS) < LOSS_RATIO * mean_loss(1)
    assert final["bbox_mAP"] > MAP_FLOOR
    assert final["bbox_mAP_50"] > MAP50_FLOOR
