"""Time per sample of RTMDet's training pipelines without a mixing step, with Mosaic + MixUp
and with their cached forms, on a synthetic set of 640-pixel images (docs/data.md quotes it):

    OMP_NUM_THREADS=1 python tools/bench_mix_pipelines.py [OUT_DIR]
"""

import sys
import time

from detcli.data.datasets.coco import CocoDataset
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.seed import sample_seed, seeded_draws

LOAD = [{"type": "LoadImageFromFile"}, {"type": "LoadAnnotations", "with_bbox": True}]
TAIL = [{"type": "RandomResize", "scale": [1280, 1280], "ratio_range": [0.1, 2.0],
         "keep_ratio": True},
        {"type": "RandomCrop", "crop_size": [640, 640]}, {"type": "YOLOXHSVRandomAug"},
        {"type": "RandomFlip", "flip_ratio": 0.5},
        {"type": "Pad", "size": [640, 640], "pad_val": {"img": [114, 114, 114]}}]
PIPELINES = {
    "stage 2 (no mixing)": LOAD + TAIL,
    "Mosaic + MixUp": [*LOAD, {"type": "Mosaic", "img_scale": [640, 640]}, *TAIL,
                       {"type": "MixUp", "img_scale": [640, 640], "ratio_range": [1.0, 1.0]}],
    "CachedMosaic + CachedMixUp": [
        *LOAD, {"type": "CachedMosaic", "img_scale": [640, 640], "max_cached_images": 20,
                "random_pop": False}, *TAIL,
        {"type": "CachedMixUp", "img_scale": [640, 640], "ratio_range": [1.0, 1.0],
         "max_cached_images": 10, "random_pop": False, "prob": 0.5}],
}


def main(out_dir: str) -> None:
    synth = make_synthetic_dataset(out_dir, num_train=40, num_val=2, image_size=640, seed=0)
    for name, pipeline in PIPELINES.items():
        ds = CocoDataset(ann_file=str(synth.ann_file("train")),
                         img_prefix=str(synth.img_prefix("train")) + "/", pipeline=pipeline)
        for i in range(5):  # warm up (and fill the caches)
            with seeded_draws(sample_seed(0, 0, i)):
                ds[i]
        reps = 2 * len(ds)
        start = time.perf_counter()
        for i in range(reps):
            with seeded_draws(sample_seed(0, 1, i)):
                ds[i % len(ds)]
        per = 1000 * (time.perf_counter() - start) / reps
        print(f"{name}: {per:.1f} ms/sample ({len(ds)} images of 640 px)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/det_synth640")
