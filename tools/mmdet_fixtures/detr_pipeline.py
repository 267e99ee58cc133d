"""Write tests/fixtures/mmdet/detr_train_pipeline.npz: MMDetection 3.3's DETR training
transforms (detr_r50_8xb2-150e_coco.py: RandomFlip(prob=0.5), then RandomChoice of
RandomChoiceResize or RandomChoiceResize + RandomCrop(absolute_range) + RandomChoiceResize) on
one fixed image with boxes, after seeding numpy with each of SEEDS, so det's preset pipeline can
be compared draw for draw (tests/data/transforms/test_choice_vs_mmdet.py).

The output images are 480 to 1333 pixels a side: the fixture keeps their shape and an exact
fingerprint (the int64 sum of the pixels times ``fingerprint_weights``), not the pixels.

Run with MMDetection 3.3's environment (../shared/mmdet_reference/README.md):
    /work/mmref/bin/python tools/mmdet_fixtures/detr_pipeline.py
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "shared" / "mmdet_reference"))
import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

import torch  # noqa: E402
from mmdet.registry import TRANSFORMS  # noqa: E402
from mmdet.structures.bbox import HorizontalBoxes  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

OUT = Path(__file__).resolve().parents[2] / "tests/fixtures/mmdet/detr_train_pipeline.npz"
SEEDS = tuple(range(12))
SCALES = [(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333), (640, 1333),
          (672, 1333), (704, 1333), (736, 1333), (768, 1333), (800, 1333)]
STEPS = [
    dict(type="RandomFlip", prob=0.5),
    dict(type="RandomChoice", transforms=[
        [dict(type="RandomChoiceResize", scales=SCALES, keep_ratio=True)],
        [dict(type="RandomChoiceResize", scales=[(400, 1333), (500, 1333), (600, 1333)],
              keep_ratio=True),
         dict(type="RandomCrop", crop_type="absolute_range", crop_size=(384, 600),
              allow_negative_crop=True),
         dict(type="RandomChoiceResize", scales=SCALES, keep_ratio=True)],
    ]),
]


def fingerprint_weights(shape):
    """Deterministic int64 weights 1..251 over an image of ``shape`` (h, w, 3)."""
    return (np.arange(int(np.prod(shape)), dtype=np.int64) % 251 + 1).reshape(shape)


def inputs():
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (31, 41, 3), dtype=np.uint8)
    img = np.repeat(np.repeat(blocks, 4, 0), 4, 1)[:120, :160].copy()  # (120, 160, 3)
    boxes = np.array([[10, 8, 60, 50], [70, 20, 150, 110], [5, 80, 40, 118], [120, 2, 158, 30]],
                     np.float32)
    return img, boxes, np.array([0, 1, 2, 1], np.int64)


def main():
    register_all_modules()
    steps = [TRANSFORMS.build(cfg) for cfg in STEPS]
    img, boxes, labels = inputs()
    out = {"img": img, "boxes": boxes, "labels": labels}
    for seed in SEEDS:
        res = {"img": img.copy(), "img_shape": img.shape[:2], "ori_shape": img.shape[:2],
               "gt_bboxes": HorizontalBoxes(torch.from_numpy(boxes.copy())),
               "gt_bboxes_labels": labels.copy(), "gt_ignore_flags": np.zeros(4, dtype=bool)}
        np.random.seed(seed)
        for step in steps:
            res = step(res)
        result = res["img"]
        out[f"s{seed}_shape"] = np.array(result.shape, np.int64)
        out[f"s{seed}_fingerprint"] = np.array(
            (result.astype(np.int64) * fingerprint_weights(result.shape)).sum(), np.int64)
        out[f"s{seed}_boxes"] = res["gt_bboxes"].tensor.numpy().astype(np.float32)
        out[f"s{seed}_labels"] = np.asarray(res["gt_bboxes_labels"], np.int64)
        out[f"s{seed}_flip"] = np.array(bool(res["flip"]))
        print(seed, result.shape, len(out[f"s{seed}_boxes"]), bool(res["flip"]))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
