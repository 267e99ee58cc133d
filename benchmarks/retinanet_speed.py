"""Speed of det's RetinaNet R50-FPN against torchvision's, in one process, runs alternating.

    python benchmarks/retinanet_speed.py [--device cpu] [--batch 2] [--size 320|HxW] [--iters 5]
        [--warmup 2] [--amp bf16] [--channels-last] [--bare] [--tv-frozen] [--cls-bias B]

Ours is ``presets/retinanet_r50.toml``'s model (ResNet-50, FPN, RetinaHead with 80 classes;
random init, ``model.backbone.init_cfg = false``); torchvision's is
``retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80)`` with
``min_size = max_size = size`` and ``detections_per_img = 100`` (our ``max_per_img``).

N images of H x W pixels (``--size S`` for S x S, or ``HxW``), G = 5 random GT boxes per image
(the same for both models); torchvision's transform gets ``min_size = min(H, W)`` and
``max_size = max(H, W)``, so it resizes nothing.
Timed, after ``--warmup`` untimed iterations of each, ``--iters`` times in alternation:

* train: forward + loss + backward + SGD step;
* infer: ``predict`` including decoding and NMS (eval mode, no grad);
* bare (``--bare``): backbone + neck + head forward only (eval mode, no grad).

Both classifiers' biases are set to ``--cls-bias`` (default logit(0.05): about half of the
random-init scores pass ``score_thr = 0.05``, so every level fills ``nms_pre = 1000`` and NMS
sees its heaviest realistic load; with the init's prior 0.01 nothing would reach NMS).

Note on the training comparison: the preset freezes the stem and ``layer1`` and keeps BatchNorm
statistics frozen (``frozen_stages = 1``, ``norm_eval = true``, as MMDetection), while
torchvision's randomly initialised model trains every layer with live BatchNorm. ``--tv-frozen``
builds torchvision's model the way torchvision builds it for fine-tuning from ImageNet weights
(FrozenBatchNorm2d, 3 trainable stages), which matches the preset's frozen parts.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torchvision.models.detection import RetinaNet, retinanet_resnet50_fpn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import detcli  # noqa: E402
from detcli.structures.batch import DetTargets, ImageBatch  # noqa: E402

PRESET = "retinanet_r50"  # a packaged preset, by name
NUM_CLASSES = 80
NUM_GTS = 5


def image_size(text: str) -> tuple[int, int]:
    """``--size``: "S" -> (S, S), "HxW" -> (H, W)."""
    try:
        sides = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        sides = ()
    if len(sides) not in (1, 2) or min(sides, default=0) < 32:
        raise argparse.ArgumentTypeError(f"size must be S or HxW with sides >= 32, got {text!r}")
    return (sides[0], sides[-1])


def torchvision_size(args: argparse.Namespace) -> dict[str, int]:
    """torchvision's transform settings that keep an H x W input at its size."""
    return {"min_size": min(args.size), "max_size": max(args.size)}


def harness_parser(description: str,
                   bare_help: str = "also time the network forward alone") -> argparse.ArgumentParser:
    """The options every speed comparison takes (device, batch, size, iterations, AMP,
    channels_last, --bare, --tv-frozen, --only); a script adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=image_size, default=(320, 320), help="S or HxW")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--bare", action="store_true", help=bare_help)
    parser.add_argument("--tv-frozen", action="store_true",
                        help="torchvision with FrozenBatchNorm2d and 3 trainable stages")
    parser.add_argument("--only", choices=["train", "infer"], default=None)
    return parser


def parse_args() -> argparse.Namespace:
    parser = harness_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--cls-bias", type=float, default=-math.log(0.95 / 0.05))
    return parser.parse_args()


def build_ours(args: argparse.Namespace) -> torch.nn.Module:
    cfg = detcli.load_config(PRESET, overrides=["model.backbone.init_cfg=false"]).cfg
    model = detcli.build_detector(cfg.model)
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(args.cls_bias)
    return model


def build_torchvision(args: argparse.Namespace) -> torch.nn.Module:
    settings = dict(**torchvision_size(args), detections_per_img=100)
    if args.tv_frozen:
        resnet = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(resnet, 3, returned_layers=[2, 3, 4],
                                         extra_blocks=LastLevelP6P7(256, 256))
        model = RetinaNet(backbone, NUM_CLASSES, **settings)
    else:
        model = retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                       num_classes=NUM_CLASSES, **settings)
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(args.cls_bias)
    return model


def random_images_and_gt(n: int, h: int, w: int, num_classes: int):
    """Seeded (0): N random images (N, 3, H, W) and G = NUM_GTS random GT boxes (N, G, 4)
    inside each (sides from 16 px to 0.4 of the image's) with labels (N, G) in [0, K)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, h, w, generator=generator)
    extent = torch.tensor([w, h], dtype=torch.float32)  # (x, y)
    xy = torch.rand(n, NUM_GTS, 2, generator=generator) * (extent * 0.6)
    wh = 16 + torch.rand(n, NUM_GTS, 2, generator=generator) * (extent * 0.4 - 16)
    boxes = torch.cat([xy, xy + wh], dim=-1)  # (N, G, 4) inside the image
    labels = torch.randint(0, num_classes, (n, NUM_GTS), generator=generator)
    return images, boxes, labels


def make_inputs(args: argparse.Namespace, device: torch.device):
    images, boxes, labels = random_images_and_gt(args.batch, *args.size, NUM_CLASSES)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    images = images.to(device).contiguous(memory_format=memory_format)
    ours = (ImageBatch.from_tensor(images),
            DetTargets.from_lists(list(boxes.to(device)), list(labels.to(device))))
    theirs = ([img for img in images],
              [{"boxes": b.to(device), "labels": c.to(device)} for b, c in zip(boxes, labels)])
    return ours, theirs


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(args: argparse.Namespace, device: torch.device):
    if args.amp is None:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(model, optimizer, losses_fn: Callable[[], dict], args, device) -> Callable[[], None]:
    def step() -> None:
        with autocast(args, device):
            losses = losses_fn()
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    return step


def no_grad_call(fn: Callable[[], object], args, device) -> Callable[[], None]:
    def call() -> None:
        with torch.no_grad(), autocast(args, device):
            fn()
    return call


def time_alternating(runs: dict[str, Callable[[], None]], args, device) -> dict[str, list[float]]:
    for run in runs.values():
        for _ in range(args.warmup):
            run()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for i in range(args.iters):
        for name in names if i % 2 == 0 else names[::-1]:  # alternate who goes first
            synchronize(device)
            start = time.perf_counter()
            runs[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def report(phase: str, times: dict[str, list[float]], batch: int) -> None:
    rates = {name: batch / statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"  {phase:5s} {name:11s} median {statistics.median(t) * 1000:8.1f} ms   "
              f"{rates[name]:7.2f} img/s   (min {min(t) * 1000:.1f} ms)")
    best = {name: min(t) for name, t in times.items()}
    print(f"  {phase:5s} det / torchvision speed ratio: {rates['det'] / rates['torchvision']:.2f} "
          f"(medians; {best['torchvision'] / best['det']:.2f} on the fastest runs)")


def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=1e-4, momentum=0.9, weight_decay=1e-4)


def compare(label: str, ours: torch.nn.Module, theirs: torch.nn.Module, args: argparse.Namespace) -> None:
    """Time det's ``ours`` against torchvision's ``theirs`` (train, infer, and bare with --bare)."""
    device = torch.device(args.device)
    ours, theirs = ours.to(device), theirs.to(device)
    if args.channels_last:
        ours = ours.to(memory_format=torch.channels_last)
        theirs = theirs.to(memory_format=torch.channels_last)
    (images, targets), (tv_images, tv_targets) = make_inputs(args, device)
    print(f"{label}: device {device}, batch {args.batch}, size {args.size[0]}x{args.size[1]}, "
          f"iters {args.iters} "
          f"(+{args.warmup} warm-up), amp {args.amp}, channels_last {args.channels_last}, "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, tv-frozen {args.tv_frozen}")

    if args.only in (None, "train"):
        ours.train(), theirs.train()
        runs = {
            "det": train_step(ours, optimizer_for(ours), lambda: ours.loss(images, targets),
                              args, device),
            "torchvision": train_step(theirs, optimizer_for(theirs),
                                      lambda: theirs(tv_images, tv_targets), args, device),
        }
        report("train", time_alternating(runs, args, device), args.batch)

    ours.eval(), theirs.eval()
    if args.only in (None, "infer"):
        runs = {
            "det": no_grad_call(lambda: ours.predict_batch(images), args, device),
            "torchvision": no_grad_call(lambda: theirs(tv_images), args, device),
        }
        report("infer", time_alternating(runs, args, device), args.batch)

    if args.bare:
        def tv_net() -> object:
            return theirs.head(list(theirs.backbone(images.tensor).values()))
        runs = {"det": no_grad_call(lambda: ours(images.tensor), args, device),
                "torchvision": no_grad_call(tv_net, args, device)}
        report("bare", time_alternating(runs, args, device), args.batch)


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    compare("RetinaNet", build_ours(args), build_torchvision(args), args)


if __name__ == "__main__":
    main()
