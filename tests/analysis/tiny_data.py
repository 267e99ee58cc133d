"""A two-image COCO dataset and a tiny-RetinaNet config pointing at it, for the viz tests.

``a.png`` is 128 x 96 (w x h): the tiny preset's test pipeline resizes it by exactly 2 to
256 x 192, which is already a multiple of 32, so the network input is (H, W) = (192, 256) and
a box maps to twice its coordinates. ``b.png`` is 100 x 50.

GT (COCO xywh -> xyxy in original pixels; labels by ascending category id):
a.png: square [10, 20, 40, 50] (label 0), circle [60, 10, 100, 80] (label 1),
       a crowd triangle [0, 60, 20, 80] (an ignore box);
b.png: triangle [10, 5, 30, 25] (label 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import torch
from torch import nn

from detcli.analysis.assign_view import visualize_assignment
from detcli.cli.viz import read_gt
from detcli.config.loader import load_config
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "presets" / "retinanet_tiny_synth.toml"
CLASSES = ["square", "circle", "triangle"]  # labels 0, 1, 2 (ascending category id)


@dataclass
class TinyData:
    root: Path
    ann_file: Path
    image_a: Path
    image_b: Path
    config: Path


def _image(path: Path, w: int, h: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8))
    return path


def make_tiny(tmp_path: Path) -> TinyData:
    root = tmp_path / "tiny"
    (root / "images").mkdir(parents=True)
    image_a = _image(root / "images" / "a.png", 128, 96, 0)
    image_b = _image(root / "images" / "b.png", 100, 50, 1)
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 128, "height": 96},
                   {"id": 2, "file_name": "b.png", "width": 100, "height": 50}],
        "categories": [{"id": 3, "name": "triangle"}, {"id": 1, "name": "square"},
                       {"id": 2, "name": "circle"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 30], "area": 900, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 10, 40, 70], "area": 2800, "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 60, 20, 20], "area": 400, "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [10, 5, 20, 20], "area": 400, "iscrowd": 0},
        ],
    }
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps(coco))
    config = tmp_path / "tiny.toml"
    splits = "".join(f'[data.{s}]\nann_file = "{ann_file}"\nimg_prefix = "{root / "images"}/"\n'
                     for s in ("train", "val", "test"))
    config.write_text(f'extends = ["{TINY}"]\n{splits}')
    return TinyData(root, ann_file, image_a, image_b, config)


def with_preset(data: TinyData, preset: str) -> TinyData:
    """The same data with another preset's model (``"dino_tiny_synth"``: presets/ name, no
    suffix): a config beside ``data.config``, ``<preset>_data.toml``, that extends it instead."""
    config = data.config.with_name(f"{preset}_data.toml")
    config.write_text(data.config.read_text().replace(TINY.name, f"{preset}.toml"))
    return replace(data, config=config)


def save_tiny_model(data: TinyData, name: str,
                    prepare: Optional[Callable[[nn.Module], None]] = None) -> Path:
    """``data.config``'s model as its constructor initialises it under seed 0 (then changed in
    place by ``prepare``, under no_grad), saved as ``data.root / name`` with :data:`CLASSES`."""
    torch.manual_seed(0)
    model = build_detector(load_config(data.config).cfg.model)
    if prepare is not None:
        with torch.no_grad():
            prepare(model)
    return save_checkpoint(data.root / name, model, meta={"classes": CLASSES}, rng=False)


def assign_boxes(cfg, image: Path, boxes: list[str], **kwargs):
    """``visualize_assignment`` on GT given as ``--box`` options, read as ``det viz assign``
    reads them."""
    return visualize_assignment(cfg, image, read_gt(cfg, image, None, boxes), **kwargs)
