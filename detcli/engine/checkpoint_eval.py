"""``evaluate_checkpoint``: what ``det test`` does, as a library call.

Build the config's model and its test (else val) dataset in test mode (every image kept), load
the checkpoint (:func:`~detcli.engine.tester.load_test_checkpoint`), run it over the images
(:mod:`detcli.engine.tester`) and score the detections with the config's
``evaluation.metric`` (:func:`detcli.evaluation.evaluator.build_evaluator`); with ``report``,
also build the evaluation report of the final detections
(:func:`detcli.evaluation.report.evaluation_report`: COCO, whatever the metric). This module sits above both: the tester runs models, the
evaluation scores detections, and neither imports this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.data.build import build_eval_dataset, check_num_classes
from detcli.engine.device import resolve_device
from detcli.evaluation.coco import CocoEvaluator
from detcli.evaluation.evaluator import build_evaluator
from detcli.evaluation.report import EvaluationReport, ReportOptions, evaluation_report
from detcli.engine.tester import (Progress, build_test_loader, load_test_checkpoint,
                                  run_inference_modes)
from detcli.engine.tta import enable_tta, merge_note
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.models.introspect import num_classes_key, num_classes_of
from detcli.structures.detections import Detections


@dataclass
class CheckpointEval:
    """What :func:`evaluate_checkpoint` found: metrics per mode and the final detections."""

    split: str  # "test" or "val"
    dataset: Any
    metrics: dict[str, dict[str, Any]]  # "plain" (and "tta") -> the evaluator's metrics
    detections: list[Detections]  # I, the TTA ones when TTA ran
    results: list[dict[str, Any]]  # the same in COCO results format
    notes: list[str] = field(default_factory=list)  # what was changed to make the run possible
    report: EvaluationReport | None = None  # of the final detections, when asked for


def split_for_testing(data_cfg: Any, split: str | None) -> tuple[str, Any]:
    """(name, dataset config in test mode) of ``split``; None: ``data.test``, else ``data.val``."""
    names = [split] if split else ["test", "val"]
    for name in names:
        cfg = data_cfg.split(name)
        if cfg is not None:
            return name, cfg.model_copy(update={"test_mode": True})  # keep every image
    raise ConfigError(f"the config has no data.{' or data.'.join(names)} to test on",
                      hint="add a [data.test] (or [data.val]) dataset, or pick one with --split")


def evaluate_checkpoint(cfg: Any, checkpoint: str | Path, *, split: str | None = None,
                        tta: bool = False, batch_size: int = 1, device: str | None = None,
                        progress: Progress | None = None,
                        report: ReportOptions | None = None) -> CheckpointEval:
    """Build ``cfg``'s model and test dataset, load ``checkpoint``, run and evaluate it.

    With ``tta`` one pass gives both the plain (view 0) and the merged detections; a single
    unflipped view gets a flip added (see :func:`detcli.engine.tta.enable_tta`). With
    ``report`` the final detections' :class:`EvaluationReport` comes with the metrics.
    """
    name, ds_cfg = split_for_testing(cfg.data, split)
    notes = []
    if tta:
        ds_cfg, note = enable_tta(ds_cfg, where=f"data.{name}")
        notes += [note] if note else []
    dev = resolve_device(device)
    dataset = build_eval_dataset(ds_cfg, on_bad=cfg.data.on_bad_image)  # skip: without bad images
    model = build_detector(cfg.model)
    check_num_classes(dataset, num_classes_of(model), num_classes_key(model))
    load_test_checkpoint(model, checkpoint, class_names=dataset.CLASSES)
    merge = merge_note(model, cfg.tta) if tta else None
    notes += [merge] if merge else []
    evaluator = build_evaluator(cfg.evaluation, dataset)  # a missing backend fails before inference
    loader = build_test_loader(dataset, samples_per_gpu=batch_size,
                               workers_per_gpu=cfg.data.workers_per_gpu)
    found = run_inference_modes(model.to(dev), loader, dev, progress=progress,
                                modes=("plain", "tta") if tta else ("plain",),
                                tta_cfg=cfg.tta)
    final = found["tta" if tta else "plain"]
    results = evaluator.results(final)
    built = None
    if report is not None:
        built = evaluation_report(CocoEvaluator(dataset, backend=cfg.evaluation.backend),
                                  results, report)
    return CheckpointEval(split=name, dataset=dataset,
                          metrics={mode: evaluator.evaluate(d) for mode, d in found.items()},
                          detections=final, results=results, notes=notes, report=built)
