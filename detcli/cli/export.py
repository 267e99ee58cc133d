"""``det export onnx CONFIG CHECKPOINT --out model.onnx``: a deployable model, checked.

The graph takes the preprocessed input (docs/export.md has the contract) and ends with decoding
and ONNX NonMaxSuppression: ``boxes (N, M, 4)``, ``scores (N, M)``, ``labels (N, M)``,
``num_dets (N,)``. ``--verify`` (the default) runs onnxruntime on new images and compares with
PyTorch; a difference beyond tolerance exits with code 1 (the file is kept for inspection), and
so does a check that compared nothing (no detection on either side) unless
``--allow-empty-verify``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from detcli.cli.common import (
    CheckpointArg,
    ConfigArg,
    DebugOpt,
    DetCommand,
    DetGroup,
    JsonOpt,
    SetOpt,
    console,
    err_console,
    examples,
    guarded,
    load,
    print_json,
)

DEFAULT_OPSET = 18  # detcli.export.onnx.DEFAULT_OPSET, repeated so `det --help` stays light

app = typer.Typer(cls=DetGroup, no_args_is_help=True,
                  help="Export a trained detector for deployment.")

@app.command("onnx", cls=DetCommand, epilog=examples(
    "det export onnx my.toml work_dirs/my/latest.pth --out model.onnx",
    "det export onnx my.toml latest.pth --dynamic-batch --dynamic-size --image-sizes"))
@guarded
def onnx(
    config: ConfigArg,
    checkpoint: CheckpointArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The ONNX file to write.")] = Path(
        "model.onnx"),
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Any batch size "
                                                "(default: a fixed batch of 1).")] = False,
    dynamic_size: Annotated[bool, typer.Option(
        "--dynamic-size", help="Any input height and width (default: fixed, see "
        "--input-size).")] = False,
    input_size: Annotated[Optional[tuple[int, int]], typer.Option(
        "--input-size", metavar="H W", help="The fixed input size (default: from the test "
        "pipeline, a square of its longer scale edge, rounded up to size_divisor).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (17 to 23).")] = DEFAULT_OPSET,
    no_nms: Annotated[bool, typer.Option("--no-nms", help="End the graph with the decoded, "
                                         "score-masked candidates; run NMS yourself (a "
                                         "two-stage model keeps its RPN's NMS).")] = False,
    image_sizes: Annotated[bool, typer.Option(
        "--image-sizes", help="Add a second input image_sizes (N, 2) int64, each image's (h, w) "
        "before padding: boxes are clipped to it as in PyTorch (default: to the padded "
        "input).")] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="Compare onnxruntime with "
                                         "PyTorch on new images.")] = True,
    allow_empty_verify: Annotated[bool, typer.Option(
        "--allow-empty-verify", help="Pass the check when neither side keeps a detection on "
        "the verification images (default: that fails, as it compares nothing).")] = False,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Export CHECKPOINT (a model of CONFIG) to ONNX with decoding and NMS inside the graph."""
    from detcli.export.onnx import ExportOptions
    from detcli.export.run import export_checkpoint

    cfg = load(config, overrides).cfg
    options = ExportOptions(opset=opset, dynamic_batch=dynamic_batch, dynamic_size=dynamic_size,
                            nms=not no_nms, image_sizes=image_sizes)
    status = (contextlib.nullcontext() if as_json else
              err_console.status("exporting (tracing the model takes a while)..."))
    with status:
        run = export_checkpoint(cfg, checkpoint, out, options=options,
                                input_size=input_size, verify=verify,
                                allow_empty_verify=allow_empty_verify)
    for note in run.notes:
        err_console.print(f"note: {note}", style="yellow", highlight=False)
    if as_json:
        print_json(_payload(run))
    else:
        _render(run)
    if run.verification is not None:
        run.verification.raise_if_failed()


def _shape(dims: list[Any]) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def _render(run: Any) -> None:
    result = run.result
    console.print(f"wrote {result.path} ({result.size_bytes / 2**20:.1f} MiB, opset "
                  f"{result.opset}) in {result.seconds:.1f} s", highlight=False)
    console.print(f"input  images {_shape(result.input_shape)} float32", highlight=False)
    for line in run.contract.describe():
        console.print(f"       {line}", highlight=False)
    if "image_sizes" in result.inputs:
        console.print(f"input  image_sizes {_shape(result.inputs['image_sizes'])} int64: (h, w) "
                      "of each image before padding", highlight=False)
    for name, dims in result.outputs.items():
        console.print(f"output {name} {_shape(dims)}", highlight=False)
    if not result.nms:
        console.print("       candidates before NMS: scores are 0 where a candidate is "
                      "dropped (score or size); run NMS yourself", highlight=False)
    console.print(f"classes {', '.join(run.classes)}", highlight=False)
    if run.verification is None:
        console.print("not verified (--no-verify)", style="yellow", highlight=False)
        return
    report = run.verification
    for line in report.lines():
        style = None if report.ok else "red"
        console.print(line, style=style, highlight=False, markup=False)


def _payload(run: Any) -> dict[str, Any]:
    result = run.result
    report = run.verification
    return {
        "path": str(result.path), "opset": result.opset, "nms": result.nms,
        "seconds": round(result.seconds, 2), "inputs": result.inputs,
        "outputs": result.outputs, "classes": run.classes, "notes": run.notes,
        "verification": None if report is None else {
            "ok": report.ok, "shapes": [list(s) for s in report.shapes],
            "max_box_diff": report.max_box_diff, "max_score_diff": report.max_score_diff,
            "num_masks_compared": report.num_masks_compared,
            "max_mask_diff": report.max_mask_diff,
            "num_reference": report.num_reference, "num_exported": report.num_exported,
            "num_matched": report.num_matched, "num_borderline": report.num_borderline,
            "compared_nothing": report.compared_nothing, "mismatches": report.mismatches},
    }
