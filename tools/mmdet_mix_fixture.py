"""Write tests/data/fixtures/mmdet_mix_transforms.npz: MMDetection 3.3's Mosaic, MixUp,
RandomAffine, YOLOXHSVRandomAug and MMCV's RandomResize on fixed inputs, each run after seeding
numpy with a known seed (MMDetection's transforms.py draws from ``numpy.random``, imported as
``random``), so det's transforms can be compared draw for draw
(tests/data/transforms/test_mix_vs_mmdet.py).

Run with MMDetection 3.3's environment (../shared/mmdet_reference/README.md):
    /work/mmref/bin/python tools/mmdet_mix_fixture.py
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "mmdet_reference"))
import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

import torch  # noqa: E402
from mmcv.transforms import RandomResize  # noqa: E402
from mmdet.datasets.transforms import (CachedMixUp, CachedMosaic, MixUp,  # noqa: E402
                                       Mosaic, RandomAffine, YOLOXHSVRandomAug)
from mmdet.structures.bbox import HorizontalBoxes  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests/data/fixtures/mmdet_mix_transforms.npz"
SIZES = [(40, 60), (30, 30), (50, 24), (36, 48)]  # (h, w) of the four input images
SEEDS = (0, 1, 2)
STREAM = (0, 1, 2, 3, 1, 0, 3, 2, 0, 1)  # the samples a cached step sees, in order


def inputs():
    rng = np.random.default_rng(0)
    arrays = {}
    for k, (h, w) in enumerate(SIZES):
        blocks = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
        arrays[f"img{k}"] = np.repeat(np.repeat(blocks, 4, 0), 4, 1)[:h, :w].copy()  # 4x4 blocks
        x1 = rng.uniform(0, w * 0.6, 3)
        y1 = rng.uniform(0, h * 0.6, 3)
        boxes = np.stack([x1, y1, x1 + rng.uniform(2, w * 0.4, 3), y1 + rng.uniform(2, h * 0.4, 3)], 1)
        arrays[f"boxes{k}"] = boxes.astype(np.float32)
        arrays[f"labels{k}"] = rng.integers(0, 3, 3).astype(np.int64)
    return arrays


def results(arrays, k):
    img = arrays[f"img{k}"].copy()
    return {"img": img, "img_shape": img.shape[:2], "ori_shape": img.shape[:2],
            "gt_bboxes": HorizontalBoxes(torch.from_numpy(arrays[f"boxes{k}"].copy())),
            "gt_bboxes_labels": arrays[f"labels{k}"].copy(),
            "gt_ignore_flags": np.zeros(3, dtype=bool)}


def save(out, name, res):
    out[f"{name}_img"] = res["img"]
    out[f"{name}_boxes"] = res["gt_bboxes"].tensor.numpy().astype(np.float32)
    out[f"{name}_labels"] = np.asarray(res["gt_bboxes_labels"], np.int64)


def main() -> None:
    register_all_modules()
    arrays = inputs()
    out = dict(arrays)
    mosaic = Mosaic(img_scale=(32, 32), center_ratio_range=(0.5, 1.5), pad_val=114.0)
    mixup = MixUp(img_scale=(32, 32), ratio_range=(0.5, 1.5), flip_ratio=0.5, pad_val=114.0)
    affine = RandomAffine(max_rotate_degree=10.0, max_translate_ratio=0.1,
                          scaling_ratio_range=(0.5, 1.5), max_shear_degree=2.0, border=(-8, -4))
    hsv = YOLOXHSVRandomAug()
    resize = RandomResize(scale=(64, 64), ratio_range=(0.5, 2.0), keep_ratio=True)
    for seed in SEEDS:
        np.random.seed(seed)
        res = results(arrays, 0)
        res["mix_results"] = [results(arrays, k) for k in (1, 2, 3)]
        save(out, f"mosaic{seed}", mosaic.transform(res))
        np.random.seed(seed)
        res = results(arrays, 0)
        res["mix_results"] = [results(arrays, 3)]
        save(out, f"mixup{seed}", mixup.transform(res))
        np.random.seed(seed)
        save(out, f"affine{seed}", affine.transform(results(arrays, 0)))
        np.random.seed(seed)
        save(out, f"hsv{seed}", hsv.transform(results(arrays, 0)))
        np.random.seed(seed)
        save(out, f"resize{seed}", resize.transform(results(arrays, 0)))
    for seed in SEEDS[:2]:
        cached_mosaic = CachedMosaic(img_scale=(32, 32), max_cached_images=6,
                                     random_pop=seed == 0, pad_val=114.0)
        cached_mixup = CachedMixUp(img_scale=(32, 32), ratio_range=(0.5, 1.5), max_cached_images=4,
                                   random_pop=seed == 0, prob=0.5, pad_val=114.0)
        for name, step in (("cmosaic", cached_mosaic), ("cmixup", cached_mixup)):
            np.random.seed(seed)
            for t, k in enumerate(STREAM):
                save(out, f"{name}{seed}_{t}", step.transform(results(arrays, k)))
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
