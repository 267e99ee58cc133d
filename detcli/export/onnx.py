"""Writing a detector to ONNX with torch's dynamo exporter and a real NonMaxSuppression node.

N images, H x W the network input, M = ``max_per_img``.

Why this exporter: ``torch.onnx.export(..., dynamo=True)`` captures the graph with
``torch.export``, which records symbolic batch and image sizes instead of the values seen while
tracing, and treats the NMS custom op (:mod:`detcli.export.nms_op`) as opaque, with a
data-dependent output size. So nothing about the tracing input -- its kept boxes, its size --
can be baked into the graph as a constant, the failure mode of tracing NMS with the TorchScript
exporter (``dynamo=False``, frozen at opset 20 and deprecated). The op becomes one ONNX
``NonMaxSuppression`` through ``custom_translation_table``; the exporter needs ``onnxscript``.

Opsets: torch writes opset 18 natively (its ONNX function library); 17 is reached with ONNX's
version converter, and newer ones up to 23 (the newest torch 2.14 names) by upgrading. A
conversion the converter cannot do leaves the file at 18 with only a warning, so the written
opset is checked and a difference is an error.

Deformable convs (DCN/DCNv2 in a backbone or head) are traced through
:func:`detcli.models.dcn.deform_conv2d_portable` (``GridSample`` + ``MatMul``, every opset and
runtime), switched on for the export only by :func:`~detcli.models.dcn.portable_deform_convs`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from detcli.errors import ExportError
from detcli.export.graph import ExportWrapper
from detcli.export.nms_op import translation_table
from detcli.export.runtime import EXPORT_PACKAGES, require
from detcli.export.query_graph import QueryExportWrapper, is_query_based
from detcli.export.two_stage_graph import TwoStageExportWrapper, is_two_stage
from detcli.models.dcn import portable_deform_convs

log = logging.getLogger(__name__)

MIN_OPSET = 17
MAX_OPSET = 23
DEFAULT_OPSET = 18
MIN_SIDE, MAX_SIDE = 32, 8192  # the range of a dynamic height or width
MAX_BATCH = 1024
MIN_TORCH = (2, 6)
INPUT_NAME = "images"
SIZES_NAME = "image_sizes"
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")


@dataclass(frozen=True)
class ExportOptions:
    """How to export: see ``det export onnx --help``."""

    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = False
    dynamic_size: bool = False
    nms: bool = True  # False: the graph ends with the candidates before NMS
    image_sizes: bool = False  # a second input (N, 2): each image's (h, w) before padding


@dataclass
class ExportResult:
    """What was written: the file, its opset, and the shape of every input and output."""

    path: Path
    opset: int
    input_shape: list[int | str]  # of "images": static sizes as ints, dynamic ones by name
    outputs: dict[str, list[int | str]]
    nms: bool
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, list[int | str]] = field(default_factory=dict)  # every input's shape

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


def check_opset(opset: int) -> None:
    """ExportError unless ``opset`` is one the exporter and the installed onnx can write."""
    require("onnx")
    import onnx

    newest = min(MAX_OPSET, onnx.defs.onnx_opset_version())
    if not MIN_OPSET <= opset <= newest:
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} to {newest} "
                          f"(default {DEFAULT_OPSET}, the opset torch's exporter writes natively)")


def check_torch() -> None:
    """ExportError unless torch has what the export relies on (``torch.library.custom_op`` and
    the dynamo exporter's ``custom_translation_table``: torch 2.6)."""
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if (major, minor) < MIN_TORCH:
        raise ExportError(f"ONNX export needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]}, this is "
                          f"torch {torch.__version__}", hint="pip install --upgrade torch")


def tracing_input(input_size: tuple[int, int], options: ExportOptions,
                  size_step: int = 32) -> torch.Tensor:
    """The example input the graph is captured with: random, seeded, (N, 3, H, W).

    A dynamic axis must not be traced at size 1 (``torch.export`` would specialise it) and
    dynamic H and W must differ (equal sizes would be assumed equal forever), so a dynamic batch
    is traced with 2 images and a dynamic size with W one ``size_step`` wider than H.
    """
    height, width = input_size
    if options.dynamic_size and height == width:
        width += size_step
    batch = 2 if options.dynamic_batch else 1
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, height, width, generator=generator)  # (N, 3, H, W)


def tracing_sizes(images: torch.Tensor) -> torch.Tensor:
    """The example ``image_sizes`` (N, 2) int64: every image a little smaller than the input."""
    height, width = images.shape[-2:]
    return torch.tensor([[height - 3, width - 5]] * images.shape[0], dtype=torch.int64)


def dynamic_shapes(options: ExportOptions) -> dict[str, dict[int, Any]] | None:
    axes: dict[int, Any] = {}
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    if options.dynamic_batch:
        axes[0] = batch
    if options.dynamic_size:
        axes[2] = torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE)
        axes[3] = torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE)
    shapes = {INPUT_NAME: axes}
    if options.image_sizes:
        shapes[SIZES_NAME] = {0: batch} if options.dynamic_batch else {}
    return shapes if any(shapes.values()) else None


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Keep the exporter's progress prints and warnings out of the user's terminal (logged at
    debug level); errors still raise."""
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in saved.items():
                logging.getLogger(name).setLevel(level)
            if printed.getvalue().strip():
                log.debug("exporter output:\n%s", printed.getvalue().strip())
            for warning in caught:
                log.debug("exporter warning: %s", warning.message)


def export_wrapper(model: nn.Module, *, nms: bool = True) -> nn.Module:
    """The traced computation for ``model``: :class:`TwoStageExportWrapper` for a detector with
    an ``rpn_head`` and a ``roi_head`` (Faster R-CNN), :class:`QueryExportWrapper` for a
    query-based one (DETR), else :class:`ExportWrapper` (a dense head)."""
    if is_two_stage(model):
        return TwoStageExportWrapper(model, nms=nms)
    if is_query_based(model):
        return QueryExportWrapper(model, nms=nms)
    return ExportWrapper(model, nms=nms)


def export_onnx(model: nn.Module, path: str | os.PathLike, *, input_size: tuple[int, int],
                options: ExportOptions = ExportOptions(),
                metadata: dict[str, str] | None = None, size_step: int = 32) -> ExportResult:
    """Export ``model`` (eval mode is set) to ``path``; see the module docstring.

    ``input_size`` (h, w) is the fixed input size of a static export, and the tracing size of a
    dynamic one. ``metadata`` is stored in the file's ``metadata_props``.
    """
    require(*EXPORT_PACKAGES)
    check_opset(options.opset)
    check_torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = export_wrapper(model.eval(), nms=options.nms).eval()
    sample = tracing_input(input_size, options, size_step)
    args = (sample, tracing_sizes(sample)) if options.image_sizes else (sample,)
    input_names = [INPUT_NAME, SIZES_NAME][: len(args)]
    started = time.perf_counter()
    try:
        # torchvision's deform_conv2d would become ONNX DeformConv (opset 19 and newer, not in
        # every runtime): every deformable conv is traced through its portable kernel (dcn.py)
        with quiet_exporter(), torch.no_grad(), portable_deform_convs(wrapper) as num_dcn:
            if num_dcn:
                log.info("exporting %d deformable convs with the portable kernel "
                         "(GridSample + MatMul)", num_dcn)
            program = torch.onnx.export(
                wrapper, args, dynamo=True, input_names=input_names,
                output_names=list(wrapper.output_names), dynamic_shapes=dynamic_shapes(options),
                custom_translation_table=translation_table(), opset_version=options.opset,
                verbose=False, optimize=True)
    except Exception as exc:  # the exporter's errors are long; the first line names the op
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed: {first}",
                          hint="run with --debug for the exporter's full report") from exc
    all_metadata = {"det.nms": json.dumps(options.nms),
                    "det.image_sizes": json.dumps(options.image_sizes), **(metadata or {})}
    program.model.metadata_props.update(all_metadata)
    program.save(str(path))
    seconds = time.perf_counter() - started
    result = describe_file(path, nms=options.nms, seconds=seconds, metadata=all_metadata)
    if result.opset != options.opset:
        raise ExportError(f"the exporter wrote opset {result.opset}, not the {options.opset} "
                          "asked for (ONNX's version converter could not convert this graph)",
                          hint=f"use --opset {DEFAULT_OPSET} or newer")
    log.info("exported %s (opset %d) in %.1f s", path, result.opset, seconds)
    return result


def describe_file(path: Path, *, nms: bool, seconds: float,
                  metadata: dict[str, str]) -> ExportResult:
    """Opset and input/output shapes of a written ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), -1)

    def dims(value: Any) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return ExportResult(path=path, opset=opset, input_shape=dims(model.graph.input[0]),
                        outputs={o.name: dims(o) for o in model.graph.output}, nms=nms,
                        seconds=seconds, metadata=metadata,
                        inputs={i.name: dims(i) for i in model.graph.input})
