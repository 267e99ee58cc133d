"""``det train CONFIG``: train a detector, showing progress, and end with its COCO metrics.

On a terminal a live bar shows epoch and iteration, ETA, each loss, lr, images/s and memory;
otherwise (a pipe, a log file, CI) the text log lines go to stderr every
``log_config.interval`` iterations. Before the first iteration the log says what the run
restored (``--resume``, ``--init-from``, an extended schedule); at the end come the last
evaluation's metrics and per-class AP tables (``--json``: a summary as JSON on stdout).

``--gpus N`` (N > 1) starts N processes through torchrun on this machine;
``torchrun --nproc_per_node N -m detcli train CONFIG`` does the same by hand, and multi-node
runs use torchrun's own rendezvous options (docs/distributed.md).
"""

from __future__ import annotations

import os
import subprocess
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from detcli.cli.common import (
    ConfigArg,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    SetOpt,
    console,
    err_console,
    examples,
    guarded,
    load,
    print_json,
)


EXAMPLES = examples(
    "det train retinanet_tiny_synth",
    "det train my.toml --resume auto",
    "det train my.toml --set optimizer.lr=0.005 --work-dir work_dirs/lr0.005")


class Amp(str, Enum):
    bf16 = "bf16"
    fp16 = "fp16"


WorkDirOpt = Annotated[Optional[Path], typer.Option(
    "--work-dir", help="Where checkpoints and logs go (default: work_dirs/<config stem>).")]
ResumeOpt = Annotated[Optional[str], typer.Option(
    "--resume", metavar="auto|PATH",
    help="Continue a run: 'auto' (the work dir's latest.pth) or a checkpoint. Restores weights, "
         "optimizer, schedule, EMA, epoch and random state; with a larger runner.max_epochs it "
         "extends a finished run.")]
InitFromOpt = Annotated[Optional[str], typer.Option(
    "--init-from", metavar="CHECKPOINT|URL", help="Start a new run from these weights only (like load_from): a "
                        "checkpoint file, or torchvision://fasterrcnn_resnet50_fpn or "
                        "torchvision://maskrcnn_resnet50_fpn (COCO); keys "
                        "that do not fit are listed and skipped.")]
AmpOpt = Annotated[Optional[Amp], typer.Option(
    help="Mixed precision on CUDA: bf16, or fp16 with a gradient scaler (not on CPU).")]
CompileOpt = Annotated[bool, typer.Option(
    "--compile", help="torch.compile the network (backbone, neck, head convolutions); losses and "
                      "post-processing stay eager. Same as --set runtime.compile=true.")]
GpusOpt = Annotated[Optional[int], typer.Option(
    "--gpus", min=1, help="Train on N GPUs of this machine (starts N processes via torchrun).")]


def _launch(gpus: int, config: Path, work_dir: Optional[Path], overrides: Optional[list[str]],
            resume: Optional[str], init_from: Optional[str], amp: Optional[Amp],
            as_json: bool, debug: bool) -> int:
    """Run this command again in ``gpus`` processes through torchrun; its exit status."""
    import torch

    from detcli.engine.distributed import torchrun_command
    from detcli.errors import ConfigError

    if torch.cuda.device_count() < gpus:
        raise ConfigError(f"--gpus {gpus} needs {gpus} CUDA devices; this machine has "
                          f"{torch.cuda.device_count()}",
                          hint="for CPU processes run torchrun --nproc_per_node N -m detcli train "
                               "CONFIG --device cpu")
    args = ["train", str(config)]
    args += ["--work-dir", str(work_dir)] if work_dir else []
    for item in overrides or []:
        args += ["--set", item]
    args += ["--resume", resume] if resume else []
    args += ["--init-from", init_from] if init_from else []
    args += ["--amp", amp.value] if amp else []
    args += ["--json"] if as_json else []
    args += ["--debug"] if debug else []
    command = torchrun_command(gpus, args)
    err_console.print("launching: " + " ".join(command), style="dim", highlight=False)
    return subprocess.call(command)


def continue_lines(config: Path, work_dir: Optional[Path], loaded: Any,
                   where: Optional[tuple[int, int, int]], extra: list[str]) -> list[str]:
    """What Ctrl-C prints: where the run stopped, and the command that continues it."""
    import shlex

    from detcli.engine.work_dir import default_work_dir

    folder = work_dir if work_dir is not None else default_work_dir(loaded.source)
    lines = []
    if where is not None:
        epoch, done, total = where
        lines.append(f"interrupted in epoch {epoch + 1}, after iteration {done} of {total}")
    else:
        lines.append("interrupted before the first iteration")
    saved = sorted(Path(folder).glob("*.pth")) if Path(folder).is_dir() else []
    if saved:
        lines.append(f"the checkpoints in {folder} keep the run; the iterations after the "
                     f"newest one are trained again")
    else:
        lines.append(f"no checkpoint in {folder} yet: --resume auto starts the run anew")
    command = ["det", "train", str(config), "--resume", "auto",
               *(["--work-dir", str(work_dir)] if work_dir is not None else []), *extra]
    lines.append("continue with: " + " ".join(shlex.quote(a) for a in command))
    return lines


def _summary(result: Any) -> dict[str, Any]:
    return {"work_dir": str(result.work_dir), "stop_reason": result.stop_reason,
            "epoch": result.epoch, "iter": result.iter,
            "restored": result.restored.lines(),
            "latest": str(result.latest) if result.latest else None,
            "best": result.best, "metrics": result.metrics}


@guarded
def train(
    config: ConfigArg,
    work_dir: WorkDirOpt = None,
    overrides: SetOpt = None,
    resume: ResumeOpt = None,
    init_from: InitFromOpt = None,
    device: DeviceOpt = None,
    amp: AmpOpt = None,
    compile_network: CompileOpt = False,
    gpus: GpusOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Train the detector CONFIG describes; ends with its COCO metrics."""
    if compile_network:
        overrides = [*(overrides or []), "runtime.compile=true"]
    if gpus is not None and gpus > 1 and "RANK" not in os.environ:
        code = _launch(gpus, config, work_dir, overrides, resume, init_from, amp, as_json, debug)
        raise typer.Exit(code)
    from detcli.engine.trainer import train_detector

    from detcli.cli.train_display import RichProgress

    loaded = load(config, overrides)
    progress = RichProgress(quiet=as_json)
    try:
        result = train_detector(loaded, work_dir=work_dir, resume=resume,
                                init_from=init_from, device=device,
                                amp=amp.value if amp else None, callbacks=[progress])
    except KeyboardInterrupt:
        progress.close()
        for line in continue_lines(config, work_dir, loaded, progress.where,
                                   [*(["--device", device] if device else []),
                                    *(["--amp", amp.value] if amp else []),
                                    *(a for o in overrides or [] for a in ("--set", o))]):
            err_console.print(line, style="yellow", highlight=False, markup=False)
        raise typer.Exit(130) from None
    finally:
        progress.close()
    if "RANK" in os.environ and os.environ.get("RANK") != "0":
        return  # rank 0 reports
    if as_json:
        print_json(_summary(result))
        return
    _render(result)


def _render(result: Any) -> None:
    from detcli.cli.test import metrics_table, per_class_table

    if result.stop_reason == "already finished":  # the logged notes said why and what to do
        err_console.print("nothing to train: the run already finished", style="yellow",
                          highlight=False)
    elif result.stop_reason != "finished":
        err_console.print(f"stopped: {result.stop_reason}", style="yellow", highlight=False)
    if result.metrics:
        console.print(metrics_table({"last evaluation": result.metrics}))
        if result.metrics.get("per_class"):
            console.print(per_class_table({"": result.metrics}, result.val_gt_per_class))
    lines = [f"work dir: {result.work_dir} (epoch {result.epoch}, iteration {result.iter})"]
    if result.latest:
        lines.append(f"latest checkpoint: {result.latest}")
    if result.best:
        lines.append(f"best {result.best['metric']} = {result.best['value']:.4f} at epoch "
                     f"{result.best['epoch']}: {result.best['path']}")
    console.print("\n".join(lines), highlight=False)
