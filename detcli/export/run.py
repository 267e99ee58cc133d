"""``det export onnx`` as one library call: config + checkpoint -> verified ONNX file.

H x W the network input. Steps: check the optional dependencies and the opset (before any
model is built, so a missing install fails in a second), build the model from the config, load
the checkpoint with ``det test``'s checks (a checkpoint that does not fit the config is a
CheckpointError naming the tensors and, when they differ, both class counts), read the input
contract from the test pipeline, export, and verify on new inputs. The graph is
:class:`~detcli.export.graph.ExportWrapper`'s for a dense head, or
:class:`~detcli.export.two_stage_graph.TwoStageExportWrapper`'s for a detector with an RPN and
a RoI head; the metadata holds the final stage's ``test_cfg`` (``det.test_cfg``: the RoI head's
for a two-stage detector, whose proposal settings go to ``det.rpn_test_cfg``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.engine.tester import load_test_checkpoint
from detcli.errors import ExportError
from detcli.export.contract import InputContract
from detcli.export.onnx import ExportOptions, ExportResult, check_opset, export_onnx
from detcli.export.runtime import EXPORT_PACKAGES, OnnxModel, require
from detcli.export.two_stage_graph import is_two_stage
from detcli.export.verify import Tolerance, VerifyReport, verify_onnx
from detcli.export.verify_inputs import folder_images, verification_batches
from detcli.inference.detector import resolve_classes
from detcli.inference.preprocess import Preprocessor, inference_pipeline, inference_image_dir
from detcli.models.build import build_detector
from detcli.models.introspect import detection_test_cfg, num_classes_of

log = logging.getLogger(__name__)


@dataclass
class ExportRun:
    """What :func:`export_checkpoint` did."""

    result: ExportResult
    contract: InputContract
    input_size: tuple[int, int]  # (h, w): the static input, or the tracing size when dynamic
    classes: list[str]
    verification: VerifyReport | None = None  # None with verify=False
    notes: list[str] = field(default_factory=list)


def export_checkpoint(cfg: Any, checkpoint: str | Path, out: str | Path, *,
                      options: ExportOptions = ExportOptions(),
                      input_size: tuple[int, int] | None = None, verify: bool = True,
                      num_verify_images: int = 4, tolerance: Tolerance = Tolerance(),
                      allow_empty_verify: bool = False) -> ExportRun:
    """Export ``cfg``'s model with ``checkpoint``'s weights to ``out``; see the module docstring.

    ``input_size`` (h, w) defaults to :meth:`InputContract.static_size`. The verification report
    is returned, not raised: call ``run.verification.raise_if_failed()`` to fail on it (a
    difference, or no detection to compare unless ``allow_empty_verify``).
    """
    require(*EXPORT_PACKAGES)
    check_opset(options.opset)
    pipeline = inference_pipeline(cfg)
    contract = InputContract.from_pipeline(pipeline)
    size = tuple(input_size) if input_size is not None else contract.static_size()
    if min(size) < 32:
        raise ExportError(f"input size {size[0]} x {size[1]} is too small: both sides must be "
                          "at least 32 pixels")
    model = build_detector(cfg.model)
    report = load_test_checkpoint(model, checkpoint)
    num_classes = num_classes_of(model)
    classes = resolve_classes(cfg, report.meta.get("classes"), num_classes)
    metadata = {
        **contract.metadata(),
        "det.classes": json.dumps(classes),
        "det.num_classes": json.dumps(num_classes),
        "det.input_size": json.dumps(list(size)),
        "det.test_cfg": json.dumps(detection_test_cfg(model).model_dump()),
        "det.checkpoint": Path(checkpoint).name,
    }
    if is_two_stage(model):  # the proposal settings baked into the graph's first stage
        metadata["det.rpn_test_cfg"] = json.dumps(model.test_cfg.rpn.model_dump())
    step = contract.size_divisor or 32
    result = export_onnx(model, out, input_size=size, options=options, metadata=metadata,
                         size_step=step)
    run = ExportRun(result=result, contract=contract, input_size=size, classes=classes)
    if verify:
        preprocess = Preprocessor(pipeline)
        images = folder_images(inference_image_dir(cfg), preprocess, num_verify_images)
        if not images:
            run.notes.append("no test images found (data.test / data.val img_prefix): verified "
                             "on synthetic images")
        batches = verification_batches(images, options, size, step)
        run.verification = verify_onnx(model, OnnxModel(result.path), batches,
                                       tolerance=tolerance, allow_empty=allow_empty_verify)
    return run
