"""The GPU benchmark: every family, det against torchvision's matching model, one table + JSON.

    python benchmarks/gpu_suite.py [--out gpu_suite.json] [--iters 20] [--warmup 5]
        [--families retinanet fcos atss faster_rcnn] [--compile] [--no-tv-frozen]
    python benchmarks/gpu_suite.py --smoke     # any machine: 2 images of 128 x 160, 2 iterations

``--smoke`` measures nothing worth keeping: it runs every code path once or twice so CI keeps
the suite working (on the CPU: float32, NCHW, one thread, no warm-up; about a minute on two
busy cores).

On CUDA (the default run; without CUDA it stops and says so): N = 8 images of 800 x 1216,
bf16 autocast, channels_last weights and inputs for both models, random init, both models in
one process, timed in alternation after ``--warmup`` untimed runs of each. Pairs:

* RetinaNet (``retinanet_r50``) vs ``retinanet_resnet50_fpn``;
* FCOS (``fcos_r50``) vs ``fcos_resnet50_fpn``;
* ATSS (``atss_r50``) vs ``retinanet_resnet50_fpn``: torchvision has no ATSS; its RetinaNet is
  the nearest (same trunk, anchor head), so this ratio is against a different detector
  (9 anchors per location and no centerness there, 1 anchor and a centerness branch here);
* Faster R-CNN (``faster_rcnn_r50``) vs ``fasterrcnn_resnet50_fpn``, with the loads matched as
  ``faster_rcnn_speed.py`` matches them (same last layers, SGD at lr 0).

The models, inputs and timing loop are the harness's (``retinanet_speed.py``, whose builders
``fcos_speed.py`` and ``faster_rcnn_speed.py`` reuse); ``--tv-frozen`` (on by default here)
builds torchvision's with FrozenBatchNorm2d and 3 trainable stages, the work our presets do
(they freeze the stem and ``layer1``). Per family and model:

* train: forward + loss + backward + SGD step, img/s = N / median step time;
* infer: ``predict`` (decode, NMS) / torchvision's eval forward;
* bare train / bare infer: the network alone -- backbone + neck + the dense head's (or the
  RPN head's) convolutions, the floor -- with ``sum of output means`` as the loss;
* outside: the share of a step spent outside the network, 1 - bare time / full time;
* peak: the most memory allocated during one more train (infer) run above what was allocated
  before it (weights, optimizer state, inputs), MiB; CUDA only.

torchvision's transform (normalise, resize by 1, batch) runs inside its timed step; ours
normalises in the data pipeline, outside any step. The ``assigners`` section checks, on the
device, that the chunked GT matching (``gt_chunk_size``) of MaxIoU, ATSS and FCOS gives the
same result as all at once on N images with 300 GT boxes each, and their peak memory.

The ``backbones`` section times one light and one strong backbone alone against torchvision's
trunk of the same architecture (random init, the same input): MobileNetV3-Large (det's
``MobileNetV3``, outputs at strides 8/16/32, vs ``mobilenet_v3_large().features``) and Swin-T
(det's ``SwinTransformer``, four normed outputs, vs ``swin_t().features``), both with stochastic
depth 0.2 for Swin as torchvision's; train (forward, the sum of output means, backward, SGD
step) and infer img/s, their ratio, and the peak memory.

``--compile`` compiles det's network (``runtime.compile``, as ``det train --compile``) before
timing; compilation happens in the warm-up runs and is not timed.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch.utils._pytree import tree_leaves

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

import detcli  # noqa: E402
import faster_rcnn_speed  # noqa: E402  (the shared harness and the per-family builders)
import fcos_speed  # noqa: E402
import retinanet_speed as harness  # noqa: E402
from detcli.engine.runtime import compile_network, uses_channels_last  # noqa: E402
from detcli.models import backbones as _backbones  # noqa: E402,F401  (registers them)
from detcli.registry import BACKBONES as BACKBONE_REGISTRY  # noqa: E402
from detcli.task.assigners import ATSSAssigner, MaxIoUAssigner  # noqa: E402
from detcli.task.assigners.fcos_rule import fcos_targets, per_point  # noqa: E402

FAMILIES = ("retinanet", "fcos", "atss", "faster_rcnn")
PEERS = {"retinanet": "retinanet_resnet50_fpn", "fcos": "fcos_resnet50_fpn",
         "atss": "retinanet_resnet50_fpn (no ATSS in torchvision)",
         "faster_rcnn": "fasterrcnn_resnet50_fpn"}
# backbone checks: name -> (det's backbone config, torchvision's model whose .features match)
BACKBONES = {
    "mobilenet_v3_large": ({"type": "MobileNetV3", "arch": "large"}, "mobilenet_v3_large"),
    "swin_t": ({"type": "SwinTransformer", "drop_path_rate": 0.2}, "swin_t"),
}
CENTERNESS_BIAS = 10.0  # centerness about 1, as fcos_speed.py
ASSIGN_GTS = 300  # GT boxes per image in the assigner check


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="tiny run on any device (2 images of 128x160, 2 iterations)")
    parser.add_argument("--device", default=None, help="default: cuda, or cpu with --smoke")
    parser.add_argument("--batch", type=int, default=None, help="default 8 (smoke: 2)")
    parser.add_argument("--size", type=harness.image_size, default=None,
                        help="HxW, default 800x1216 (smoke: 128x160)")
    parser.add_argument("--iters", type=int, default=None, help="default 20 (smoke: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="default 5 (smoke: 0)")
    parser.add_argument("--amp", choices=["bf16", "fp16", "none"], default=None,
                        help="default bf16 on CUDA, none on the CPU (slow bf16 convolutions)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="default: on for CUDA, off on the CPU (runtime.channels_last auto)")
    parser.add_argument("--tv-frozen", action=argparse.BooleanOptionalAction, default=True,
                        help="torchvision with FrozenBatchNorm2d and 3 trainable stages")
    parser.add_argument("--compile", action="store_true", help="torch.compile det's network")
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--backbones", nargs="*", choices=list(BACKBONES),
                        default=list(BACKBONES), help="light and strong backbones to time alone")
    parser.add_argument("--out", type=Path, default=Path("gpu_suite.json"))
    args = parser.parse_args(argv)
    smoke = args.smoke
    defaults = {"batch": (8, 2), "size": ((800, 1216), (128, 160)), "iters": (20, 2),
                "warmup": (5, 0)}
    for name, (full, tiny) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, tiny if smoke else full)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.amp is None:
        args.amp = "bf16" if device.type == "cuda" else "none"
    if args.amp == "none":
        args.amp = None
    if args.channels_last is None:
        args.channels_last = uses_channels_last("auto", device)
    # what the harness's builders read
    args.cls_bias = -math.log(0.95 / 0.05)
    args.hot_classes, args.hot_prob, args.only, args.bare = 4, 0.1, None, True
    return args


# ---- the pairs ------------------------------------------------------------------------------


def build_atss(args: argparse.Namespace) -> torch.nn.Module:
    cfg = detcli.load_config("atss_r50", overrides=["model.backbone.init_cfg=false"]).cfg
    model = detcli.build_detector(cfg.model)
    with torch.no_grad():
        model.bbox_head.atss_cls.bias.fill_(args.cls_bias)
        model.bbox_head.atss_centerness.bias.fill_(CENTERNESS_BIAS)
    return model


def build_pair(family: str, args: argparse.Namespace) -> tuple[torch.nn.Module, torch.nn.Module]:
    if family == "retinanet":
        return harness.build_ours(args), harness.build_torchvision(args)
    if family == "fcos":
        return fcos_speed.build_ours(args), fcos_speed.build_torchvision(args)
    if family == "atss":
        return build_atss(args), harness.build_torchvision(args)
    ours, theirs = faster_rcnn_speed.build_ours(), faster_rcnn_speed.build_torchvision(args)
    faster_rcnn_speed.align_last_layers(ours, theirs, args)
    return ours, theirs


def bare_forward(family: str, model: torch.nn.Module, theirs: bool) -> Callable:
    """images (N, 3, H, W) -> the network's raw outputs (backbone, neck, dense/RPN head)."""
    if not theirs:
        return model
    if family == "faster_rcnn":
        return lambda x: model.rpn.head(list(model.backbone(x).values()))
    return lambda x: model.head(list(model.backbone(x).values()))


def output_loss(outputs: Any) -> torch.Tensor:
    return sum(t.float().mean() for t in tree_leaves(outputs) if isinstance(t, torch.Tensor))


# ---- measuring ------------------------------------------------------------------------------


def peak_mib(run: Callable[[], None], device: torch.device) -> float | None:
    """MiB allocated at the peak of one more ``run`` above what was allocated before it."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def measure(family: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Train, infer and the bare network for det and torchvision: img/s, outside, peak."""
    torch.manual_seed(0)
    ours, theirs = build_pair(family, args)
    ours, theirs = ours.to(device), theirs.to(device)
    if args.channels_last:
        ours = ours.to(memory_format=torch.channels_last)
        theirs = theirs.to(memory_format=torch.channels_last)
    if args.compile:
        compile_network(ours)
    (images, targets), (tv_images, tv_targets) = harness.make_inputs(args, device)
    if family == "faster_rcnn":
        images = faster_rcnn_speed.normalized_like(theirs, images, args)
        tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in tv_targets]
        sgd = faster_rcnn_speed.still_sgd  # lr 0: the loads stay as aligned
    else:
        sgd = harness.optimizer_for
    x = images.tensor
    ours_bare, theirs_bare = bare_forward(family, ours, False), bare_forward(family, theirs, True)

    phases: dict[str, dict[str, Callable[[], None]]] = {
        "train": {
            "det": harness.train_step(ours, sgd(ours), lambda: ours.loss(images, targets),
                                      args, device),
            "torchvision": harness.train_step(theirs, sgd(theirs),
                                              lambda: theirs(tv_images, tv_targets), args, device),
        },
        "bare_train": {
            "det": harness.train_step(ours, sgd(ours),
                                      lambda: {"loss": output_loss(ours_bare(x))}, args, device),
            "torchvision": harness.train_step(theirs, sgd(theirs),
                                              lambda: {"loss": output_loss(theirs_bare(x))},
                                              args, device),
        },
        "infer": {
            "det": harness.no_grad_call(lambda: ours.predict_batch(images), args, device),
            "torchvision": harness.no_grad_call(lambda: theirs(tv_images), args, device),
        },
        "bare_infer": {
            "det": harness.no_grad_call(lambda: ours_bare(x), args, device),
            "torchvision": harness.no_grad_call(lambda: theirs_bare(x), args, device),
        },
    }
    result: dict[str, Any] = {"family": family, "peer": PEERS[family]}
    rows: dict[str, dict[str, Any]] = {"det": {}, "torchvision": {}}
    for phase, runs in phases.items():
        training = "train" in phase
        for model in (ours, theirs):
            model.train(training)
        times = harness.time_alternating(runs, args, device)
        for name, run in runs.items():
            rows[name][f"{phase}_img_s"] = args.batch / statistics.median(times[name])
            if not phase.startswith("bare"):
                rows[name][f"{phase}_peak_mib"] = peak_mib(run, device)
    for row in rows.values():
        for phase in ("train", "infer"):
            # 1 - bare time / full time, with time = N / (img/s)
            row[f"{phase}_outside"] = 1 - row[f"{phase}_img_s"] / row[f"bare_{phase}_img_s"]
    result.update(rows)
    result["train_ratio"] = rows["det"]["train_img_s"] / rows["torchvision"]["train_img_s"]
    result["infer_ratio"] = rows["det"]["infer_img_s"] / rows["torchvision"]["infer_img_s"]
    return result


# ---- backbones alone --------------------------------------------------------------------------


def measure_backbone(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """det's backbone vs torchvision's trunk of the same architecture: train and infer img/s,
    their ratios, peak memory."""
    torch.manual_seed(0)
    values, peer = BACKBONES[name]
    cfg = BACKBONE_REGISTRY.config(values["type"]).model_validate(values)
    ours = BACKBONE_REGISTRY.build(cfg).to(device)
    theirs = torchvision.models.get_model(peer).features.to(device)
    if args.channels_last:
        ours = ours.to(memory_format=torch.channels_last)
        theirs = theirs.to(memory_format=torch.channels_last)
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 3, *args.size, device=device).contiguous(memory_format=memory)
    models = {"det": ours, "torchvision": theirs}
    phases = {
        "train": {key: harness.train_step(model, harness.optimizer_for(model),
                                          lambda model=model: {"loss": output_loss(model(x))},
                                          args, device) for key, model in models.items()},
        "infer": {key: harness.no_grad_call(lambda model=model: model(x), args, device)
                  for key, model in models.items()},
    }
    result: dict[str, Any] = {"name": name, "det": cfg.label(), "peer": f"{peer}().features",
                              "out_channels": cfg.out_channels()}
    for phase, runs in phases.items():
        for model in models.values():
            model.train(phase == "train")
        times = harness.time_alternating(runs, args, device)
        for key, run in runs.items():
            result[f"{key}_{phase}_img_s"] = args.batch / statistics.median(times[key])
            result[f"{key}_{phase}_peak_mib"] = peak_mib(run, device)
        result[f"{phase}_ratio"] = result[f"det_{phase}_img_s"] / result[
            f"torchvision_{phase}_img_s"]
    return result


def backbone_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| backbone | det train img/s | torchvision | ratio | det infer img/s | torchvision "
             "| ratio | det peak train MiB | torchvision |", "|" + "---|" * 9]
    for r in rows:
        lines.append(
            f"| {r['det']} vs {r['peer']} | {fmt(r['det_train_img_s'])} | "
            f"{fmt(r['torchvision_train_img_s'])} | {fmt(r['train_ratio'], 2)} | "
            f"{fmt(r['det_infer_img_s'])} | {fmt(r['torchvision_infer_img_s'])} | "
            f"{fmt(r['infer_ratio'], 2)} | {fmt(r['det_train_peak_mib'], 0)} | "
            f"{fmt(r['torchvision_train_peak_mib'], 0)} |")
    return "\n".join(lines)


# ---- the assigners on the device ------------------------------------------------------------


def crowded_targets(args: argparse.Namespace, device: torch.device):
    g = torch.Generator().manual_seed(0)
    h, w = args.size
    extent = torch.tensor([w, h, w, h], dtype=torch.float32)
    centre = torch.rand(args.batch, ASSIGN_GTS, 2, generator=g) * extent[:2]
    half = 4 + torch.rand(args.batch, ASSIGN_GTS, 2, generator=g) * (extent[:2] * 0.1)
    boxes = torch.minimum(torch.cat([centre - half, centre + half], -1).clamp(min=0), extent)
    labels = torch.randint(0, 80, (args.batch, ASSIGN_GTS), generator=g)
    return boxes.to(device), labels.to(device)


def assigner_checks(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Chunked (the default gt_chunk_size) vs all at once: equal results, time and peak."""
    h, w = args.size
    gt_boxes, gt_labels = crowded_targets(args, device)
    strides = [8, 16, 32, 64, 128]
    sizes = [(math.ceil(h / s), math.ceil(w / s)) for s in strides]
    retina = detcli.load_config("retinanet_r50", ["model.backbone.init_cfg=false"]).cfg.model
    head = detcli.build_detector(retina).bbox_head
    anchors = torch.cat(head.prior_generator.grid_priors(sizes, device=device))  # (R, 4)
    atss = detcli.build_detector(detcli.load_config(
        "atss_r50", ["model.backbone.init_cfg=false"]).cfg.model).bbox_head.prior_generator
    atss_levels = atss.grid_priors(sizes, device=device)
    points_levels = detcli.build_detector(detcli.load_config(
        "fcos_r50", ["model.backbone.init_cfg=false"]).cfg.model).bbox_head.prior_generator \
        .grid_priors(sizes, device=device, with_stride=True)
    points = torch.cat(points_levels)
    ranges = per_point(torch.tensor([[-1, 64], [64, 128], [128, 256], [256, 512], [512, 1e8]],
                                    device=device), [p.shape[0] for p in points_levels])
    cases = {
        "MaxIoUAssigner": lambda c: MaxIoUAssigner(gt_chunk_size=c).assign(
            anchors, gt_boxes, gt_labels),
        "ATSSAssigner": lambda c: ATSSAssigner(gt_chunk_size=c).assign(
            torch.cat(atss_levels), gt_boxes, gt_labels,
            num_level_priors=[p.shape[0] for p in atss_levels]),
        "fcos_targets": lambda c: fcos_targets(points, points[:, 2:], ranges, gt_boxes,
                                               gt_labels, 80, gt_chunk_size=c),
    }
    rows = []
    for name, run in cases.items():
        row: dict[str, Any] = {"name": name, "images": args.batch, "gts": ASSIGN_GTS}
        outputs = {}
        for label, chunk in (("whole", 0), ("chunked", 32)):
            run(chunk)  # warm-up
            harness.synchronize(device)
            start = time.perf_counter()
            outputs[label] = run(chunk)
            harness.synchronize(device)
            row[f"{label}_ms"] = (time.perf_counter() - start) * 1000
            row[f"{label}_peak_mib"] = peak_mib(lambda: run(chunk), device)
        whole, chunked = outputs["whole"], outputs["chunked"]
        row["equal"] = all(torch.equal(getattr(whole, f), getattr(chunked, f))
                           for f in whole.__dataclass_fields__)
        rows.append(row)
    return rows


# ---- report ---------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| family | model | train img/s | infer img/s | bare train | bare infer | "
             "outside train | outside infer | peak train MiB | peak infer MiB | ratio train | "
             "ratio infer |", "|" + "---|" * 12]
    for r in results:
        for name in ("det", "torchvision"):
            row = r[name]
            ratios = (fmt(r["train_ratio"], 2), fmt(r["infer_ratio"], 2)) if name == "det" \
                else ("", "")
            label = name if name == "det" else r["peer"]
            lines.append(
                f"| {r['family']} | {label} | {fmt(row['train_img_s'])} | "
                f"{fmt(row['infer_img_s'])} | {fmt(row['bare_train_img_s'])} | "
                f"{fmt(row['bare_infer_img_s'])} | {row['train_outside']:.0%} | "
                f"{row['infer_outside']:.0%} | {fmt(row['train_peak_mib'], 0)} | "
                f"{fmt(row['infer_peak_mib'], 0)} | {ratios[0]} | {ratios[1]} |")
    return "\n".join(lines)


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" and not args.smoke:
        print("gpu_suite.py measures on a CUDA GPU (800x1216, batch 8, bf16) and this run has "
              f"none (device {device}, CUDA available: {torch.cuda.is_available()}). Run "
              "`python benchmarks/gpu_suite.py --smoke` to check the suite works here.",
              file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    elif args.smoke:  # a busy machine's cores make multi-threaded backward many times slower
        torch.set_num_threads(1)
    started = time.perf_counter()
    header = {"device": str(device), "machine": machine(device), "torch": torch.__version__,
              "torchvision": torchvision.__version__, "batch": args.batch,
              "size": list(args.size), "amp": args.amp, "channels_last": args.channels_last,
              "tv_frozen": args.tv_frozen, "compile": args.compile, "iters": args.iters,
              "warmup": args.warmup, "smoke": args.smoke}
    print(f"{header['machine']}; torch {header['torch']}, torchvision {header['torchvision']}; "
          f"batch {args.batch}, {args.size[0]}x{args.size[1]}, amp {args.amp}, channels_last "
          f"{args.channels_last}, tv-frozen {args.tv_frozen}, compile {args.compile}",
          flush=True)
    results = []
    for family in args.families:
        family_start = time.perf_counter()
        results.append(measure(family, args, device))
        print(f"  {family}: {time.perf_counter() - family_start:.0f} s", flush=True)
    backbones = []
    for name in args.backbones:
        backbone_start = time.perf_counter()
        backbones.append(measure_backbone(name, args, device))
        print(f"  backbone {name}: {time.perf_counter() - backbone_start:.0f} s", flush=True)
    assigners = assigner_checks(args, device)
    report = {**header, "results": results, "backbones": backbones, "assigners": assigners,
              "wall_s": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(table(results))
    if backbones:
        print(backbone_table(backbones))
    for row in assigners:
        print(f"  {row['name']}: {row['images']} images x {row['gts']} GT, chunked == whole: "
              f"{row['equal']}; whole {row['whole_ms']:.1f} ms, peak "
              f"{fmt(row['whole_peak_mib'], 0)} MiB; chunked {row['chunked_ms']:.1f} ms, peak "
              f"{fmt(row['chunked_peak_mib'], 0)} MiB")
    print(f"total {report['wall_s']:.0f} s; JSON: {args.out}")
    return 0 if all(row["equal"] for row in assigners) else 1


if __name__ == "__main__":
    sys.exit(main())
