"""``det predict CONFIG CHECKPOINT INPUT...``: detections on image files, folders or globs.

Runs the config's test pipeline and the model (PyTorch, or onnxruntime with ``--onnx``) on each
image. ``--out DIR`` gets one picture per image with boxes, class names and scores (named after
the image, sub-folders kept) and ``predictions.json`` (COCO-style records, see
:mod:`detcli.inference.files`); ``--json`` prints the same records on stdout. An image that
cannot be read is reported with its file and the rest go on; the command then exits with 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from detcli.cli.common import (
    ConfigArg,
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    SetOpt,
    console,
    err_console,
    guarded,
    load,
    print_json,
)

CheckpointArg = Annotated[Path, typer.Argument(
    help="The checkpoint (.pth) to run. With --onnx it is not loaded: the ONNX file holds the "
         "weights.", show_default=False)]
InputsArg = Annotated[list[str], typer.Argument(
    help="Image files, folders (searched recursively) or quoted glob patterns.",
    show_default=False)]


def _progress(disable: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=err_console, transient=True,
                    disable=disable or not err_console.is_terminal)


@guarded
def predict(
    config: ConfigArg,
    checkpoint: CheckpointArg,
    inputs: InputsArg,
    onnx: Annotated[Optional[Path], typer.Option(
        "--onnx", help="Run this file (from `det export onnx`) with onnxruntime instead of "
        "PyTorch.")] = None,
    score_thr: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Keep detections scoring above this (drawings and JSON).")] = 0.3,
    out: Annotated[Optional[Path], typer.Option(
        help="Write pictures with the boxes and predictions.json here.")] = None,
    device: DeviceOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Detect objects in images with CHECKPOINT (or an exported --onnx model) of CONFIG."""
    from detcli.inference import Detector
    from detcli.inference.files import collect_images, relative_names

    cfg = load(config, overrides).cfg
    paths = collect_images(inputs)
    if onnx is not None:
        detector = Detector.from_onnx(cfg, onnx, score_thr=score_thr)
    else:
        detector = Detector.from_checkpoint(cfg, checkpoint, device=device, score_thr=score_thr)
    names = relative_names(paths)
    records, failed, per_image = _run(detector, paths, names, out, quiet=as_json)
    if out is not None:
        from detcli.inference.files import write_predictions

        written = write_predictions(out, records)
        err_console.print(f"wrote {len(paths) - len(failed)} pictures and {written}",
                          highlight=False)
    if as_json:
        print_json({"backend": detector.backend.name, "num_images": len(paths),
                    "num_detections": len(records), "classes": detector.classes,
                    "failed": [{"file": str(p), "error": e} for p, e in failed],
                    "out": str(out) if out else None, "predictions": records})
    else:
        _summary(detector, per_image, records, failed, len(paths))
    if failed:
        raise typer.Exit(1)


def _run(detector: Any, paths: list[Path], names: list[Path], out: Optional[Path], *,
         quiet: bool) -> tuple[list[dict], list[tuple[Path, str]], list[tuple[str, int]]]:
    """Predict every image: (records, (file, error) of failed images, (name, count) per image)."""
    from detcli.data.transforms.image_io import read_image
    from detcli.errors import DataError
    from detcli.inference.files import prediction_records, save_drawing

    records: list[dict] = []
    failed: list[tuple[Path, str]] = []
    per_image: list[tuple[str, int]] = []
    with _progress(quiet) as bar:
        task = bar.add_task("predicting", total=len(paths))
        for path, name in zip(paths, names):
            try:
                image = read_image(path)  # (H, W, 3) BGR
                dets = detector(image)
            except DataError as exc:  # listed in the summary; the other images go on
                failed.append((path, str(exc)))
            else:
                records += prediction_records(name.as_posix(), dets, detector.classes)
                per_image.append((name.as_posix(), len(dets)))
                if out is not None:
                    save_drawing(out, name, image, dets, detector.classes)
            bar.advance(task)
    return records, failed, per_image


def _summary(detector: Any, per_image: list[tuple[str, int]], records: list[dict],
             failed: list[tuple[Path, str]], num_images: int) -> None:
    from rich.table import Table

    table = Table(title=f"detections ({detector.backend.name}, score > "
                        f"{detector.score_thr:g})", title_justify="left")
    table.add_column("image")
    table.add_column("detections", justify="right")
    table.add_column("classes")
    for name, count in per_image[:50]:
        classes = sorted({r["category_name"] for r in records if r["file_name"] == name})
        table.add_row(name, str(count), ", ".join(classes))
    console.print(table)
    if len(per_image) > 50:
        console.print(f"... and {len(per_image) - 50} more images", highlight=False)
    done = num_images - len(failed)
    line = f"{done} of {num_images} images, {len(records)} detections"
    if failed:
        line += f"; {len(failed)} image(s) could not be read:"
    console.print(line, highlight=False)
    for path, error in failed:
        console.print(f"  {path}: {error}", style="red", highlight=False, markup=False)
