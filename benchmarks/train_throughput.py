"""Training images per second: det's tiny preset and R50 preset next to torchvision's RetinaNet.

    .venv/bin/python benchmarks/train_throughput.py [--device cpu|cuda] [--size 320]
        [--iters 5] [--warmup 2] [--threads T] [--amp bf16|fp16] [--no-loop] [--json]

N images per batch, S x S pixels, G = 5 random GT boxes per image (the same for every model).

Three "step" rows time one optimisation step (forward, loss, backward, gradient clipping,
optimizer step) on one fixed in-memory batch, after ``--warmup`` untimed steps, ``--iters``
times, and report images / median step time:

* ``det tiny``: ``presets/retinanet_tiny_synth.toml`` at its own 256 x 256 and batch 8, through
  the engine's :class:`~detcli.engine.train_step.TrainStep` with the preset's optimizer (AdamW)
  and grad clip;
* ``det r50``: ``presets/retinanet_r50.toml`` (80 classes, no pretrained download) at
  ``--size`` and batch 2, SGD as in the preset;
* ``torchvision r50``: ``RetinaNet`` with a ResNet-50-FPN built to match the preset's frozen
  parts (FrozenBatchNorm2d, stem and layer1 frozen, P6/P7 from C5 as ``add_extra_convs =
  "on_input"``), ``min_size = max_size = --size``, the same SGD.

The "loop" row (unless ``--no-loop``) trains the tiny preset for one epoch through
``train_detector`` on the synthetic dataset (``data/synth``, generated if missing), so data
loading, logging and checkpointing count: the img/s of its log records, without evaluation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from detcli.config.loader import load_config  # noqa: E402
from detcli.engine.optim import build_optimizer  # noqa: E402
from detcli.engine.train_step import LossForward, TrainStep  # noqa: E402
from detcli.models.build import build_detector  # noqa: E402
from detcli.structures.batch import DetTargets, ImageBatch  # noqa: E402

TINY = "retinanet_tiny_synth"  # packaged presets, by name
R50 = "retinanet_r50"
NUM_GTS = 5


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=320, help="R50 image side")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    parser.add_argument("--no-loop", action="store_true", help="skip the end-to-end tiny epoch")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def random_batch(n: int, size: int, num_classes: int, device: torch.device):
    """(ours, torchvision's) views of one batch of random images and boxes."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=g)
    xy = torch.rand(n, NUM_GTS, 2, generator=g) * (size * 0.6)
    wh = 16 + torch.rand(n, NUM_GTS, 2, generator=g) * (size * 0.4 - 16)
    boxes = torch.cat([xy, xy + wh], dim=-1)  # (N, G, 4) inside the image
    labels = torch.randint(0, num_classes, (n, NUM_GTS), generator=g)
    ours = (ImageBatch.from_tensor(images), DetTargets.from_lists(list(boxes), list(labels)))
    theirs = ([img.to(device) for img in images],
              [{"boxes": b.to(device), "labels": c.to(device)} for b, c in zip(boxes, labels)])
    return ours, theirs


def det_step(preset: str, size: int, batch: int, device: torch.device, amp: str | None):
    cfg = load_config(preset, ["model.backbone.init_cfg=false"]).cfg
    model = build_detector(cfg.model).to(device).train()
    optimizer = build_optimizer(model, cfg.optimizer)
    clip = cfg.optimizer_config.grad_clip
    step = TrainStep(LossForward(model), optimizer, device=device, amp=amp,
                     scaler=torch.amp.GradScaler("cuda") if amp == "fp16" else None,
                     grad_clip=(clip.max_norm, clip.norm_type) if clip else None)
    (images, targets), _ = random_batch(batch, size, model.bbox_head.num_classes, device)
    return lambda: step(images, targets)


def torchvision_r50(size: int, batch: int, device: torch.device, amp: str | None):
    resnet = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(resnet, 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(2048, 256))
    model = RetinaNet(backbone, 80, min_size=size, max_size=size).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    _, (images, targets) = random_batch(batch, size, 80, device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
    return step


def time_step(step: Callable[[], object], args: argparse.Namespace, device: torch.device) -> float:
    """Median seconds of one step."""
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def tiny_loop(device: torch.device) -> float:
    """img/s of one epoch of the tiny preset through train_detector (no evaluation)."""
    from detcli.data.synth import ensure_synthetic_dataset
    from detcli.engine.trainer import train_detector

    synth = ensure_synthetic_dataset(ROOT / "data" / "synth")
    overrides = ["runner.max_epochs=1", "data.val=false", "log_config.interval=5",
                 f"data.train.ann_file={synth.ann_file('train')}",
                 f"data.train.img_prefix={synth.img_prefix('train')}/"]
    with tempfile.TemporaryDirectory() as work_dir:
        result = train_detector(load_config(TINY, overrides), work_dir=work_dir,
                                device=str(device))
    rates = [r["img_per_s"] for r in result.history if r["mode"] == "train"][1:]  # skip start-up
    return statistics.median(rates)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
                 platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"{model}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def main() -> None:
    args = parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [
        ("det tiny (step)", 8, 256, det_step(TINY, 256, 8, device, args.amp)),
        ("det r50 (step)", 2, args.size, det_step(R50, args.size, 2, device, args.amp)),
        ("torchvision r50 (step)", 2, args.size, torchvision_r50(args.size, 2, device, args.amp)),
    ]
    results = []
    for name, batch, size, step in rows:
        seconds = time_step(step, args, device)
        results.append({"model": name, "batch": batch, "size": size,
                        "step_ms": seconds * 1000, "img_per_s": batch / seconds})
    if not args.no_loop:
        results.append({"model": "det tiny (loop, data included)", "batch": 8, "size": 256,
                        "step_ms": None, "img_per_s": tiny_loop(device)})
    header = {"device": str(device), "machine": machine(device), "torch": torch.__version__,
              "torchvision": torchvision.__version__, "amp": args.amp}
    if args.json:
        print(json.dumps({**header, "results": results}, indent=2))
        return
    print(f"{header['machine']}; torch {header['torch']}, torchvision {header['torchvision']}, "
          f"amp {args.amp or 'off'}")
    print(f"| model | batch | size | ms / step | img/s |\n|---|---|---|---|---|")
    for r in results:
        ms = f"{r['step_ms']:.0f}" if r["step_ms"] is not None else "-"
        print(f"| {r['model']} | {r['batch']} | {r['size']} | {ms} | {r['img_per_s']:.1f} |")


if __name__ == "__main__":
    main()
