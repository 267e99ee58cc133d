"""Shared inputs of the anchor-analysis tests: a hand-made 3-image COCO set with a one-anchor
design whose answers are worked out by hand, and a bad design on the synthetic dataset.

Hand-made set: three 48 x 32 images, resized x2 by the val pipeline (img_scale [96, 64]) and
padded to 96 x 64 (size_divisor 32). One level, stride 32, one 32 x 32 anchor per location
(octave_base_scale 1, one scale, ratio 1), so the network sees the 2 x 3 grid of
tests/analysis/test_assignment.py scaled by 2, and IoUs are those of that module's docstring:

    a.jpg  GT0 [8, 8, 24, 24] triangle  best IoU 1        1 positive
           GT1 [26, 0, 40, 12] square   0.358974 (P2)     1 (low quality)
           GT2 [0, 10, 8, 22] circle    0.375 (P3)        1 (low quality); P5 ignored (0.152)
    b.jpg  GT1 [26, 0, 40, 12] square   0.358974 (P2)     0: GT3 takes P2 (higher slot)
           GT3 [26, 2, 38, 10] triangle 0.257143 (P2)     1 (low quality); P5 ignored
    c.jpg  GT4 [24, 8, 40, 24] circle   1 (P5)            1

Network-input areas: GT0 and GT4 are 32 x 32 = 1024, medium (COCO small is < 32²); the others
small. Assigner: pos_iou_thr 0.5, neg_iou_thr 0.15, min_pos_iou 0.
"""

from __future__ import annotations

import json
from pathlib import Path

from detcli.data.synth import make_synthetic_dataset

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "presets" / "retinanet_tiny_synth.toml"
HAND_BOXES = {  # file -> [(x, y, w, h) COCO box, category id]
    "a.jpg": [((8, 8, 16, 16), 3), ((26, 0, 14, 12), 1), ((0, 10, 8, 12), 2)],
    "b.jpg": [((26, 0, 14, 12), 1), ((26, 2, 12, 8), 3)],
    "c.jpg": [((24, 8, 16, 16), 2)],
}


def hand_config(folder: Path) -> Path:
    """Write the hand-made COCO file and a config that analyses it; returns the config."""
    images, anns = [], []
    for image_id, (name, boxes) in enumerate(HAND_BOXES.items(), start=1):
        images.append({"id": image_id, "file_name": name, "width": 48, "height": 32})
        for bbox, cat in boxes:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                         "bbox": list(bbox), "area": float(bbox[2] * bbox[3]), "iscrowd": 0})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(("square", "circle", "triangle"))]
    ann_file = folder / "hand.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    config = folder / "hand.toml"
    config.write_text(f'''extends = ["{TINY}"]
[model.bbox_head.anchor_generator]
strides = [32]
ratios = [1.0]
octave_base_scale = 1
scales_per_octave = 1

[model.train_cfg.assigner]
pos_iou_thr = 0.5
neg_iou_thr = 0.15
min_pos_iou = 0

[data.val]
type = "CocoDataset"
ann_file = "{ann_file}"
img_prefix = "{folder}/"
pipeline = [
    {{ type = "LoadImageFromFile" }},
    {{ type = "MultiScaleFlipAug", img_scale = [96, 64], flip = false, transforms = [
        {{ type = "Resize", keep_ratio = true }},
        {{ type = "RandomFlip" }},
        {{ type = "Pad", size_divisor = 32 }},
        {{ type = "ImageToTensor", keys = ["img"] }},
        {{ type = "Collect", keys = ["img"] }},
    ] }},
]
''')
    return config


BAD_ANCHORS = "model.bbox_head.anchor_generator.octave_base_scale=32"  # 256-400 px on level 0


def synth_config(folder: Path) -> Path:
    """The tiny preset on a 12-image synthetic val set (seed 1: 28 GT boxes)."""
    synth = make_synthetic_dataset(folder / "synth", num_train=0, num_val=12, image_size=256, seed=1)
    config = folder / "synth.toml"
    config.write_text(f'extends = ["{TINY}"]\n[data.val]\nann_file = "{synth.ann_file("val")}"\n'
                      f'img_prefix = "{synth.img_prefix("val")}/"\n')
    return config
