"""``det predict CONFIG [CHECKPOINT] INPUT...``: detections on images and videos.

Runs the config's test pipeline and the model -- PyTorch with CHECKPOINT, or onnxruntime with
``--onnx model.onnx``, which holds the weights, so no checkpoint is named then -- on each image
and on every frame of each video (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, read with OpenCV).
INPUTs are files, folders (searched recursively) or quoted globs; what each file is called under
``--out`` is said in :mod:`detcli.inference.files` (several folders keep their own names).
``--out DIR`` gets one picture per image with boxes, class names and scores, an annotated
``.mp4`` per video, and ``predictions.json`` (COCO-style records; a video frame's carry
``"frame"``); ``--json`` prints the same records on stdout. A file that cannot be read is
reported with its name and the rest go on; the command then exits with 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from detcli.cli.common import (
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    SetOpt,
    console,
    err_console,
    examples,
    guarded,
    load,
    plural,
    print_json,
)
from detcli.cli.progress import JobProgress
from detcli.inference.defaults import DEFAULT_SCORE_THR

CHECKPOINT_SUFFIXES = (".pth", ".pt")
ZOO_PREFIX = "mmdet://"  # detcli.zoo.mmdet.PREFIX, repeated so `det --help` stays light

EXAMPLES = examples(
    "det predict my.toml work_dirs/my/latest.pth photos/ --out predictions/",
    "det predict work_dirs/my/latest.pth photos/ --out predictions/",
    "det predict mmdet://retinanet_r50_fpn_1x_coco photos/ --out predictions/",
    "det predict my.toml --onnx model.onnx clip.mp4 'shots/**/*.jpg' --out predictions/")

# a str, not a Path: Path("mmdet://NAME") would fold the "//"
ModelArg = Annotated[str, typer.Argument(
    metavar="CONFIG|CHECKPOINT",
    help="A config file (TOML) or preset name; or, with no config, a checkpoint that keeps its "
         "config (det train writes them) or mmdet://NAME (its det preset; det zoo lists them).",
    show_default=False)]
FilesArg = Annotated[list[str], typer.Argument(
    metavar="[CHECKPOINT] INPUT...",
    help="The checkpoint (.pth or mmdet://NAME) to run, then image or video files, folders (searched "
         "recursively) or quoted glob patterns. With --onnx, the inputs only.",
    show_default=False)]


@dataclass
class Outcome:
    """What predicting on every input gave (records in input order)."""

    records: list[dict] = field(default_factory=list)
    per_file: list[tuple[str, int, int]] = field(default_factory=list)  # name, frames, dets
    failed: list[tuple[Path, str]] = field(default_factory=list)
    videos: list[dict[str, Any]] = field(default_factory=list)
    pictures: int = 0


def is_checkpoint(name: str) -> bool:
    """A checkpoint file's name (.pth, .pt) or ``mmdet://NAME``, not a config."""
    return name.startswith(ZOO_PREFIX) or Path(name).suffix.lower() in CHECKPOINT_SUFFIXES


def split_checkpoint(files: list[str], onnx: Optional[Path]) -> tuple[Optional[str], list[str]]:
    """(checkpoint, inputs) of the positional arguments: the first is the checkpoint unless
    ``--onnx`` runs the model; a .pth given with --onnx anyway is not loaded (said in a note)."""
    from detcli.errors import ConfigError

    if onnx is None:
        if len(files) < 2:
            raise ConfigError("det predict needs a CHECKPOINT and at least one INPUT (or --onnx "
                              "model.onnx and the INPUTs)",
                              hint="det predict CONFIG CHECKPOINT INPUT... or det predict CONFIG "
                                   "--onnx model.onnx INPUT...")
        return files[0], files[1:]
    if files and is_checkpoint(files[0]):
        err_console.print(f"note: --onnx runs {onnx}; the checkpoint {files[0]} is not needed "
                          "and not loaded", style="yellow", highlight=False)
        files = files[1:]
    return None, files


@guarded
def predict(
    config: ModelArg,
    files: FilesArg,
    onnx: Annotated[Optional[Path], typer.Option(
        "--onnx", help="Run this file (from `det export onnx`) with onnxruntime instead of a "
        "checkpoint with PyTorch; its classes and input contract must fit CONFIG.")] = None,
    score_thr: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Keep detections scoring above this (drawings and JSON).")
    ] = DEFAULT_SCORE_THR,
    out: Annotated[Optional[Path], typer.Option(
        help="Write pictures and annotated videos with the boxes, and predictions.json, "
             "here.")] = None,
    device: DeviceOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Detect objects in images and videos with a CHECKPOINT (or an exported --onnx model) of
    CONFIG. CONFIG may be left out when the checkpoint keeps its config (every one det train
    writes does) or is mmdet://NAME with a det preset: det predict CHECKPOINT INPUT..."""
    from detcli.engine.checkpoint_config import config_from_checkpoint
    from detcli.inference import Detector
    from detcli.inference.files import collect_inputs

    if onnx is None and is_checkpoint(config):  # CHECKPOINT INPUT...
        cfg = config_from_checkpoint(config, overrides or []).cfg
        checkpoint, inputs = config, files
    else:
        cfg = load(Path(config), overrides).cfg
        checkpoint, inputs = split_checkpoint(files, onnx)
    found = collect_inputs(inputs)
    if onnx is not None:
        detector = Detector.from_onnx(cfg, onnx, score_thr=score_thr)
    else:
        detector = Detector.from_checkpoint(cfg, checkpoint, device=device, score_thr=score_thr)
    outcome = Outcome()
    images = [f for f in found if not f.is_video]
    if images:
        _predict_images(detector, images, out, outcome, quiet=as_json)
    for video in (f for f in found if f.is_video):
        _predict_video(detector, video, out, outcome, quiet=as_json)
    if out is not None:
        from detcli.inference.files import write_predictions

        written = write_predictions(out, outcome.records)
        made = [plural(outcome.pictures, "picture")]
        made += [plural(len(outcome.videos), "video")] if outcome.videos else []
        err_console.print(f"wrote {' and '.join(made)} and {written}", highlight=False)
    if as_json:
        print_json({"backend": detector.backend.name, "num_images": len(images),
                    "num_videos": len(found) - len(images),
                    "num_detections": len(outcome.records), "classes": detector.classes,
                    "failed": [{"file": str(p), "error": e} for p, e in outcome.failed],
                    "videos": outcome.videos, "out": str(out) if out else None,
                    "predictions": outcome.records})
    else:
        _summary(detector, outcome, len(images), len(found) - len(images))
    if outcome.failed:
        raise typer.Exit(1)


def _predict_images(detector: Any, images: list[Any], out: Optional[Path], outcome: Outcome, *,
                    quiet: bool) -> None:
    """Every image: its records and count, or its failure; its drawing under ``out``."""
    from detcli.data.transforms.image_io import read_image
    from detcli.errors import DataError
    from detcli.inference.files import prediction_records, save_drawing

    with JobProgress("predicting", total=len(images), quiet=quiet) as job:
        for item in images:
            try:
                image = read_image(item.path)  # (H, W, 3) BGR
                dets = detector(image)
            except DataError as exc:  # listed in the summary; the other images go on
                outcome.failed.append((item.path, str(exc)))
            else:
                name = item.name.as_posix()
                outcome.records += prediction_records(name, dets, detector.classes)
                outcome.per_file.append((name, 0, len(dets)))
                if out is not None:
                    save_drawing(out, item.name, image, dets, detector.classes)
                    outcome.pictures += 1
            job.advance()


def _predict_video(detector: Any, item: Any, out: Optional[Path], outcome: Outcome, *,
                   quiet: bool) -> None:
    """Every frame of one video: records with ``frame``, and the annotated copy under ``out``."""
    from detcli.errors import DataError
    from detcli.inference.files import draw_detections, prediction_records
    from detcli.inference.video import VideoReader, VideoWriter, annotated_video_path

    name = item.name.as_posix()
    writer = None
    records: list[dict] = []
    frames = 0
    try:
        reader = VideoReader(item.path)
        info = reader.info
        target = annotated_video_path(out, item.name) if out is not None else None
        if target is not None:
            writer = VideoWriter(target, info.fps, info.width, info.height)
        with JobProgress(name, total=info.num_frames or None, quiet=quiet) as job:
            for index, frame in reader:
                dets = detector(frame)
                for record in prediction_records(name, dets, detector.classes):
                    records.append({**record, "frame": index})
                if writer is not None:
                    writer.write(draw_detections(frame, dets, detector.classes))
                frames = index + 1
                job.advance()
    except DataError as exc:
        if writer is not None:  # no half-written video is left behind
            writer.close()
            writer.path.unlink(missing_ok=True)
            writer = None
        outcome.failed.append((item.path, str(exc)))
        return
    finally:
        if writer is not None:
            writer.close()
    outcome.records += records
    outcome.per_file.append((name, frames, len(records)))
    outcome.videos.append({"file_name": name, "frames": frames, "fps": info.fps,
                           "out": str(target) if target is not None else None})


def _summary(detector: Any, outcome: Outcome, num_images: int, num_videos: int) -> None:
    from rich.table import Table

    from detcli.inference.files import VIDEO_SUFFIXES

    table = Table(title=f"detections ({detector.backend.name}, score > "
                        f"{detector.score_thr:g})", title_justify="left")
    table.add_column("file")
    table.add_column("detections", justify="right")
    table.add_column("classes")
    for name, frames, count in outcome.per_file[:50]:
        classes = sorted({r["category_name"] for r in outcome.records if r["file_name"] == name})
        shown = f"{count} in {plural(frames, 'frame')}" if frames else str(count)
        table.add_row(name, shown, ", ".join(classes))
    console.print(table)
    if len(outcome.per_file) > 50:
        console.print(f"... and {plural(len(outcome.per_file) - 50, 'more file')}",
                      highlight=False)
    failed_images = sum(1 for p, _ in outcome.failed if p.suffix.lower() not in VIDEO_SUFFIXES)
    parts = [f"{num_images - failed_images} of {plural(num_images, 'image')}"] if num_images else []
    if num_videos:
        parts.append(f"{num_videos - (len(outcome.failed) - failed_images)} of "
                     f"{plural(num_videos, 'video')}")
    line = ", ".join(parts) + f", {plural(len(outcome.records), 'detection')}"
    if outcome.failed:
        line += f"; {plural(len(outcome.failed), 'file')} could not be read:"
    console.print(line, highlight=False)
    for path, error in outcome.failed:
        console.print(f"  {path}: {error}", style="red", highlight=False, markup=False)
