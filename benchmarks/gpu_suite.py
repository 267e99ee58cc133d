"""The GPU benchmark: every family, det against torchvision's nearest model, one table + JSON.

    python benchmarks/gpu_suite.py [--out gpu_suite.json] [--iters 20] [--warmup 5]
        [--families retinanet fcos atss faster_rcnn mask_rcnn cascade_rcnn rtmdet detr
                    deformable_detr dino] [--backbones mobilenet_v3_large swin_t]
        [--compile] [--no-tv-frozen]
    python benchmarks/gpu_suite.py --smoke     # any machine: tiny models, 2 images of 128 x 160
    benchmarks/h200.sh                          # a lent H200, one command (benchmarks/README.md)

``--smoke`` measures nothing worth keeping: it runs every code path once or twice so CI keeps
the suite working: det's ``*_tiny_synth`` preset of each family against torchvision's same
classes of model on a ResNet-18 with FPN 64 (``suite_peers.py``), 2 iterations, and the
backbones on one 64 x 64 image; on the CPU float32, NCHW, one thread, no warm-up (about 25 s
of CPU time; the wall time grows with the machine's load).

On CUDA (the default run; without CUDA it stops and says so): N = 8 images of 800 x 1216,
bf16 autocast, channels_last weights and inputs for both models, random init, both models in
one process, timed in alternation after ``--warmup`` untimed runs of each. The families are
data (``suite_families.FAMILIES``: det's preset, torchvision's peer, the floor):

* RetinaNet (``retinanet_r50``) vs ``retinanet_resnet50_fpn``;
* FCOS (``fcos_r50``) vs ``fcos_resnet50_fpn``;
* ATSS (``atss_r50``) vs ``retinanet_resnet50_fpn``: torchvision has no ATSS; its RetinaNet is
  the nearest (same trunk, anchor head), so this ratio is against a different detector
  (9 anchors per location and no centerness there, 1 anchor and a centerness branch here);
* Faster R-CNN (``faster_rcnn_r50``) vs ``fasterrcnn_resnet50_fpn``, Mask R-CNN
  (``mask_rcnn_r50``) vs ``maskrcnn_resnet50_fpn`` (box-filled GT masks), Cascade R-CNN
  (``cascade_rcnn_r50``) vs ``fasterrcnn_resnet50_fpn`` (the nearest: torchvision has no
  cascade; the ratio prices the two extra stages), each with the loads matched as
  ``faster_rcnn_speed.py`` matches them (the same last layers in every box stage, SGD at lr 0);
* RTMDet (``rtmdet_l``), DETR (``detr_r50``), Deformable DETR (``deformable_detr_r50``) and
  DINO (``dino_4scale_r50``): torchvision has none of them; det's numbers and its own floor
  only (ratios "-", JSON null).

``--tv-frozen`` (on by default here) builds torchvision's with FrozenBatchNorm2d and 3
trainable stages, the work our presets do (they freeze the stem and ``layer1``). Per family
and model:

* train: forward + loss + backward + SGD step, img/s = N / median step time;
* infer: ``predict_batch`` (decode, NMS or top-k; Mask R-CNN's ``predict``, which also pastes
  the masks into the image as torchvision's eval forward does) / torchvision's eval forward;
* bare train / bare infer: the network alone, the floor, with ``sum of output means`` as the
  loss; ``suite_families.py`` says exactly what each kind's floor runs (dense: backbone, neck,
  head convolutions; two-stage: also RoIAlign and the box and mask heads on fixed RoIs, as
  many as a real step classifies; DETR-like: backbone, neck, encoder, decoder and head
  branches, without DINO's denoising queries, matching, losses and top-k);
* outside: the share of a step spent outside the network, 1 - bare time / full time (the
  key number: the project's target is under 10 %);
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

The JSON is rewritten after every family and backbone (``"complete": false`` until the end), so
a run stopped by a time limit keeps what it measured. ``--compile`` compiles det's network
(``runtime.compile``, as ``det train --compile``) before timing; compilation happens in the
warm-up runs and is not timed.
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
from torch import nn
from torch.utils._pytree import tree_leaves

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

import detcli  # noqa: E402
import faster_rcnn_speed  # noqa: E402  (still_sgd: the two-stage loads stay put)
import retinanet_speed as harness  # noqa: E402  (the shared timing loop)
import suite_families  # noqa: E402  (the families, as data)
from detcli.engine.runtime import compile_network, uses_channels_last  # noqa: E402
from detcli.models import backbones as _backbones  # noqa: E402,F401  (registers them)
from detcli.registry import BACKBONES as BACKBONE_REGISTRY  # noqa: E402
from detcli.task.assigners import ATSSAssigner, MaxIoUAssigner  # noqa: E402
from detcli.task.assigners.fcos_rule import fcos_targets, per_point  # noqa: E402
from suite_families import FAMILIES, Family  # noqa: E402

# backbone checks: name -> (det's backbone config, torchvision's model whose .features match)
BACKBONES = {
    "mobilenet_v3_large": ({"type": "MobileNetV3", "arch": "large"}, "mobilenet_v3_large"),
    "swin_t": ({"type": "SwinTransformer", "drop_path_rate": 0.2}, "swin_t"),
}
ASSIGN_GTS = 300  # GT boxes per image in the assigner check
SMOKE_MODELS = ("det's *_tiny_synth presets against torchvision's models on a ResNet-18 with "
                "FPN 64 (named by their full-size builders)")
OUTSIDE_TARGET = 0.10  # the project's target for the share of a step outside the network
SMOKE_BACKBONE_SIZE = (64, 64)  # --smoke times the backbones on one image of this size


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
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES),
                        metavar="FAMILY", help=f"default: all of {', '.join(FAMILIES)}")
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


# ---- measuring ------------------------------------------------------------------------------


def output_loss(outputs: Any) -> torch.Tensor:
    return sum(t.float().mean() for t in tree_leaves(outputs) if isinstance(t, torch.Tensor))


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


def phases_of(family: Family, ours: nn.Module, theirs: nn.Module | None,
              args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Callable]]:
    """phase -> model -> one timed run: train, bare_train, infer, bare_infer."""
    inputs = suite_families.make_inputs(family, ours.num_classes, args, device)
    images, targets = inputs.images, inputs.targets
    if family.kind == "two_stage":
        if theirs is not None:
            images = suite_families.normalized_like(theirs, images, args)
        sgd = faster_rcnn_speed.still_sgd  # lr 0: the loads stay as aligned
        plan = suite_families.roi_plan(ours, args, device)
    else:
        sgd, plan = harness.optimizer_for, None
    x = images.tensor
    models: dict[str, nn.Module] = {"det": ours}
    # a mask family's inference pastes its masks into the image, as torchvision's eval forward
    predict = ours.predict if family.masks else ours.predict_batch
    full = {"det": (lambda: ours.loss(images, targets), lambda: predict(images))}
    floors = {"det": lambda training: suite_families.det_floor(family, ours, plan, training)}
    if theirs is not None:
        models["torchvision"] = theirs
        full["torchvision"] = (lambda: theirs(inputs.tv_images, inputs.tv_targets),
                               lambda: theirs(inputs.tv_images))
        floors["torchvision"] = lambda training: suite_families.peer_floor(
            family, theirs, plan, training, args.size)
    phases: dict[str, dict[str, Callable]] = {p: {} for p in ("train", "bare_train", "infer",
                                                              "bare_infer")}
    for name, model in models.items():
        optimizer = sgd(model)
        loss_fn, infer_fn = full[name]
        train_floor, infer_floor = floors[name](True), floors[name](False)
        phases["train"][name] = harness.train_step(model, optimizer, loss_fn, args, device)
        phases["bare_train"][name] = harness.train_step(
            model, optimizer, lambda f=train_floor: {"loss": output_loss(f(x))}, args, device)
        phases["infer"][name] = harness.no_grad_call(infer_fn, args, device)
        phases["bare_infer"][name] = harness.no_grad_call(lambda f=infer_floor: f(x), args,
                                                          device)
    return phases


def measure(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Train, infer and the bare network for det and torchvision's peer (if any): img/s,
    outside, peak, ratios (None without a peer)."""
    family = FAMILIES[name]
    torch.manual_seed(0)
    ours, theirs = suite_families.build_pair(family, args)
    models = [m.to(device) for m in (ours, theirs) if m is not None]
    if args.channels_last:
        models = [m.to(memory_format=torch.channels_last) for m in models]
    if args.compile:
        compile_network(ours)
    phases = phases_of(family, ours, theirs, args, device)
    preset = family.smoke_preset if args.smoke else family.preset
    result: dict[str, Any] = {"family": name, "preset": preset,
                              "peer": family.peer_label or None, "floor": family.floor}
    rows: dict[str, dict[str, Any]] = {key: {} for key in phases["train"]}
    for phase, runs in phases.items():
        for model in models:
            model.train("train" in phase)
        times = harness.time_alternating(runs, args, device)
        for key, run in runs.items():
            rows[key][f"{phase}_img_s"] = args.batch / statistics.median(times[key])
            if not phase.startswith("bare"):
                rows[key][f"{phase}_peak_mib"] = peak_mib(run, device)
    for row in rows.values():
        for phase in ("train", "infer"):
            # 1 - bare time / full time, with time = N / (img/s)
            row[f"{phase}_outside"] = 1 - row[f"{phase}_img_s"] / row[f"bare_{phase}_img_s"]
    result["det"] = rows["det"]
    peer = rows.get("torchvision")
    result["torchvision"] = peer
    for phase in ("train", "infer"):
        result[f"{phase}_ratio"] = None if peer is None else \
            rows["det"][f"{phase}_img_s"] / peer[f"{phase}_img_s"]
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
    batch, size = (1, SMOKE_BACKBONE_SIZE) if args.smoke else (args.batch, args.size)
    x = torch.randn(batch, 3, *size, device=device).contiguous(memory_format=memory)
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
            result[f"{key}_{phase}_img_s"] = batch / statistics.median(times[key])
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
    """One row per family and model; ratios (det / torchvision) on det's row, "-" where the
    family has no torchvision peer; then what each family's floor runs."""
    lines = ["| family | model | train img/s | infer img/s | bare train | bare infer | "
             "outside train | outside infer | peak train MiB | peak infer MiB | ratio train | "
             "ratio infer |", "|" + "---|" * 12]
    for r in results:
        for name in ("det", "torchvision"):
            row = r[name]
            if row is None:
                continue
            ratios = (fmt(r["train_ratio"], 2), fmt(r["infer_ratio"], 2)) if name == "det" \
                else ("", "")
            label = name if name == "det" else r["peer"]
            lines.append(
                f"| {r['family']} | {label} | {fmt(row['train_img_s'])} | "
                f"{fmt(row['infer_img_s'])} | {fmt(row['bare_train_img_s'])} | "
                f"{fmt(row['bare_infer_img_s'])} | {row['train_outside']:.0%} | "
                f"{row['infer_outside']:.0%} | {fmt(row['train_peak_mib'], 0)} | "
                f"{fmt(row['infer_peak_mib'], 0)} | {ratios[0]} | {ratios[1]} |")
    floors = {r["floor"]: [] for r in results}
    for r in results:
        floors[r["floor"]].append(r["family"])
    lines += [f"  bare ({', '.join(names)}): {floor}" for floor, names in floors.items()]
    return "\n".join(lines)


def outside_summary(results: list[dict[str, Any]]) -> str:
    """det's share of each step outside the network per family, against the target."""
    parts = []
    for r in results:
        train, infer = r["det"]["train_outside"], r["det"]["infer_outside"]
        over = " (over)" if max(train, infer) >= OUTSIDE_TARGET else ""
        parts.append(f"{r['family']} {train:.0%} / {infer:.0%}{over}")
    return (f"det outside the network, train / infer (target < {OUTSIDE_TARGET:.0%}): "
            + ", ".join(parts))


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
    started, cpu_started = time.perf_counter(), time.process_time()
    header = {"device": str(device), "machine": machine(device), "torch": torch.__version__,
              "torchvision": torchvision.__version__, "batch": args.batch,
              "size": list(args.size), "amp": args.amp, "channels_last": args.channels_last,
              "tv_frozen": args.tv_frozen, "compile": args.compile, "iters": args.iters,
              "warmup": args.warmup, "smoke": args.smoke,
              "models": SMOKE_MODELS if args.smoke else "det's R50 presets (rtmdet_l) and "
              "torchvision's ResNet-50 FPN models, random init"}
    print(f"{header['machine']}; torch {header['torch']}, torchvision {header['torchvision']}; "
          f"batch {args.batch}, {args.size[0]}x{args.size[1]}, amp {args.amp}, channels_last "
          f"{args.channels_last}, tv-frozen {args.tv_frozen}, compile {args.compile}",
          flush=True)
    if args.smoke:
        print(f"  smoke: {SMOKE_MODELS}; the figures check the code paths, nothing more",
              flush=True)
    results: list[dict[str, Any]] = []
    backbones: list[dict[str, Any]] = []
    assigners: list[dict[str, Any]] = []
    report = {**header, "results": results, "backbones": backbones, "assigners": assigners,
              "complete": False}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every section: a run cut short keeps what it measured
        report["wall_s"] = time.perf_counter() - started
        report["cpu_s"] = time.process_time() - cpu_started  # this process's CPU time
        args.out.write_text(json.dumps(report, indent=2))

    for family in args.families:
        family_start, family_cpu = time.perf_counter(), time.process_time()
        results.append(measure(family, args, device))
        print(f"  {family}: {time.perf_counter() - family_start:.0f} s (CPU "
              f"{time.process_time() - family_cpu:.0f} s)", flush=True)
        save()
    for name in args.backbones:
        backbone_start = time.perf_counter()
        backbones.append(measure_backbone(name, args, device))
        print(f"  backbone {name}: {time.perf_counter() - backbone_start:.0f} s", flush=True)
        save()
    assigners.extend(assigner_checks(args, device))
    report["complete"] = True
    save()
    print(table(results))
    print(outside_summary(results))
    if backbones:
        print(backbone_table(backbones))
    for row in assigners:
        print(f"  {row['name']}: {row['images']} images x {row['gts']} GT, chunked == whole: "
              f"{row['equal']}; whole {row['whole_ms']:.1f} ms, peak "
              f"{fmt(row['whole_peak_mib'], 0)} MiB; chunked {row['chunked_ms']:.1f} ms, peak "
              f"{fmt(row['chunked_peak_mib'], 0)} MiB")
    print(f"total {report['wall_s']:.0f} s ({report['cpu_s']:.0f} s of CPU time); JSON: "
          f"{args.out}")
    return 0 if all(row["equal"] for row in assigners) else 1


if __name__ == "__main__":
    sys.exit(main())
