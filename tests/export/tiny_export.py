"""A tiny RetinaNet checkpoint that detects things, its config, and images, for the export tests.

The model is ``presets/retinanet_tiny_synth.toml`` shrunk (eighth-width ResNet-18, 16-channel
FPN, one-conv head); its test pipeline is the preset's (fit in 256 x 256, pad to a multiple of
32). Random weights give near-equal scores, and near-equal scores make a comparison of two
runtimes a coin toss at every top-k and NMS tie; so the classifier and box regressor get
larger weights (scores spread over (0, 1), boxes of many shapes) and a bias that leaves a few
hundred candidates per image above the score threshold: NMS and the top-M step have real work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "presets" / "retinanet_tiny_synth.toml"
CLASSES = ["square", "circle", "triangle"]
LOGIT_GAIN, LOGIT_BIAS = 1.0, -4.0  # logits spread by a few units: scores over (0, 1)
DELTA_GAIN = 0.3  # deltas of a few tenths: boxes of many shapes


@dataclass
class TinyExport:
    root: Path
    config: Path
    checkpoint: Path
    images: Path  # a folder of synthetic images (the config's data.test img_prefix)


def config_text(images: Path, ann_file: Path) -> str:
    return f"""
extends = ["{TINY}"]
[model.backbone]
base_channels = 8
[model.neck]
out_channels = 16
[model.bbox_head]
feat_channels = 16
stacked_convs = 1
[data]
workers_per_gpu = 0
train = false
[data.val]
ann_file = "{ann_file}"
img_prefix = "{images}/"
[data.test]
ann_file = "{ann_file}"
img_prefix = "{images}/"
"""


def detecting_model(config: Path, seed: int = 0) -> torch.nn.Module:
    """The config's model with weights that produce spread-out detections (module docstring)."""
    torch.manual_seed(seed)
    model = build_detector(load_config(config).cfg.model).eval()
    head = model.bbox_head
    with torch.no_grad():
        for conv in head.modules():
            if isinstance(conv, torch.nn.Conv2d):  # keep the features' scale through the towers
                torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        head.retina_cls.weight.mul_(LOGIT_GAIN)
        torch.nn.init.constant_(head.retina_cls.bias, LOGIT_BIAS)
        head.retina_reg.weight.mul_(DELTA_GAIN)
    return model


def make_tiny_export(root: Path, num_images: int = 5) -> TinyExport:
    """Images, config and checkpoint under ``root``."""
    synth = make_synthetic_dataset(root / "synth", num_train=0, num_val=num_images,
                                   image_size=128, seed=5)
    config = root / "tiny.toml"
    config.write_text(config_text(synth.img_prefix("val"), synth.ann_file("val")))
    model = detecting_model(config)
    checkpoint = save_checkpoint(root / "tiny.pth", model, meta={"classes": CLASSES}, rng=False)
    return TinyExport(root=root, config=config, checkpoint=checkpoint,
                      images=synth.img_prefix("val"))
