"""Images per second of the RetinaNet training data pipeline on the synthetic dataset.

Pipeline: LoadImageFromFile, LoadAnnotations, Resize (small scale), RandomFlip 0.5,
Normalize, Pad 32, DefaultFormatBundle, Collect; batches from ``build_dataloader`` and the
contract collate. Runs with 0 and 2 workers (``--workers``), reports one epoch over the train
split each (worker start-up included, and the rate after the first batch), plus the time of
each pipeline step in the main process.

    .venv/bin/python benchmarks/data_pipeline.py [--root data/synth] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from detcli.data.datasets.coco import CocoDataset
from detcli.data.loader import build_dataloader
from detcli.data.synth import ensure_synthetic_dataset


def retinanet_train_pipeline(img_scale: tuple[int, int]) -> list[dict]:
    return [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True},
        {"type": "Resize", "img_scale": list(img_scale), "keep_ratio": True},
        {"type": "RandomFlip", "flip_ratio": 0.5},
        {"type": "Normalize", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
         "to_rgb": True},
        {"type": "Pad", "size_divisor": 32},
        {"type": "DefaultFormatBundle"},
        {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels"]},
    ]


def time_loader(dataset: CocoDataset, workers: int, batch_size: int) -> dict[str, float]:
    """One epoch: total rate (start-up included) and the rate after the first batch."""
    loader = build_dataloader(dataset, batch_size, workers, shuffle=True, seed=0, pin_memory=False)
    start = time.perf_counter()
    first = None
    images = 0
    for batch_images, _ in loader:
        images += len(batch_images)
        if first is None:
            first = (time.perf_counter(), images)
    end = time.perf_counter()
    steady = (images - first[1]) / (end - first[0]) if images > first[1] else float("nan")
    return {"workers": workers, "images": images, "seconds": end - start,
            "images_per_s": images / (end - start), "steady_images_per_s": steady}


def time_steps(dataset: CocoDataset, count: int) -> dict[str, float]:
    """Milliseconds per image of each pipeline step, in this process."""
    pipeline = dataset.pipeline
    totals = dict.fromkeys(pipeline.names, 0.0)
    for idx in range(min(count, len(dataset))):
        info = dataset.img_infos[idx]
        results = {"img_info": dict(info), "ann_info": dataset.get_ann_info(idx),  # the contract
                   "img_prefix": dataset.img_prefix, "image_id": info["id"], "bbox_fields": []}
        for name, step in zip(pipeline.names, pipeline.transforms):
            t0 = time.perf_counter()
            results = step(results)
            totals[name] += time.perf_counter() - t0
    n = min(count, len(dataset))
    return {name: 1000 * total / n for name, total in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/synth", help="synthetic dataset directory")
    parser.add_argument("--img-scale", type=int, nargs=2, default=(512, 320), metavar=("LONG", "SHORT"))
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    synth = ensure_synthetic_dataset(Path(args.root))
    dataset = CocoDataset(ann_file=str(synth.ann_file("train")), img_prefix=str(synth.img_prefix("train")),
                          pipeline=retinanet_train_pipeline(tuple(args.img_scale)))
    np.random.seed(0)
    steps = time_steps(dataset, 100)
    runs = [time_loader(dataset, w, args.batch_size) for w in args.workers]
    if args.json:
        print(json.dumps({"img_scale": args.img_scale, "runs": runs, "step_ms": steps}, indent=1))
        return
    print(f"RetinaNet train pipeline, {len(dataset)} synthetic images, img_scale {args.img_scale}, "
          f"batch {args.batch_size}")
    print(f"{'workers':>8} {'images':>7} {'seconds':>8} {'img/s':>8} {'img/s after 1st batch':>22}")
    for r in runs:
        print(f"{r['workers']:>8} {r['images']:>7} {r['seconds']:>8.2f} {r['images_per_s']:>8.1f} "
              f"{r['steady_images_per_s']:>22.1f}")
    print("per step, ms per image (main process):")
    for name, ms in steps.items():
        print(f"  {name:<22} {ms:7.3f}")


if __name__ == "__main__":
    main()
