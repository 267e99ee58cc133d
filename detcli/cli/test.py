"""``det test CONFIG CHECKPOINT``: evaluate a checkpoint on the config's test (or val) data
with the metrics of ``evaluation.metric`` (COCO's by default; VOC's with ``"voc"``).

Prints a table of the metrics and one of per-class AP (``--json``: the same as JSON);
``--out`` writes the detections in COCO results format, ``--show-dir`` one prediction-vs-GT
picture per image. With ``--tta`` one pass over the data gives both the plain and the
test-time-augmented detections, and the tables show them side by side (``--out`` and
``--show-dir`` then use the TTA ones). ``--plots DIR`` also builds the evaluation report
(:mod:`detcli.evaluation.report`: PR curves, the images with the most errors at
``--conf-iou`` / ``--conf-score``), writes its pictures and ``report.json`` into DIR and prints
its tables (``--json``: under ``"report"``).
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from detcli.cli.common import (
    CheckpointArg,
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
    plural,
    print_json,
)
from detcli.cli.progress import JobProgress

METRIC_ROWS = (
    ("bbox_mAP", "AP @[IoU 0.50:0.95]"), ("bbox_mAP_50", "AP @[IoU 0.50]"),
    ("bbox_mAP_75", "AP @[IoU 0.75]"), ("bbox_mAP_s", "AP small"), ("bbox_mAP_m", "AP medium"),
    ("bbox_mAP_l", "AP large"), ("bbox_AR@1", "AR maxDets 1"), ("bbox_AR@10", "AR maxDets 10"),
    ("bbox_AR@100", "AR maxDets 100"), ("bbox_AR_s@100", "AR small"),
    ("bbox_AR_m@100", "AR medium"), ("bbox_AR_l@100", "AR large"),
    ("segm_mAP", "mask AP @[IoU 0.50:0.95]"), ("segm_mAP_50", "mask AP @[IoU 0.50]"),
    ("segm_mAP_75", "mask AP @[IoU 0.75]"), ("segm_mAP_s", "mask AP small"),
    ("segm_mAP_m", "mask AP medium"), ("segm_mAP_l", "mask AP large"),
    ("segm_AR@1", "mask AR maxDets 1"), ("segm_AR@10", "mask AR maxDets 10"),
    ("segm_AR@100", "mask AR maxDets 100"), ("segm_AR_s@100", "mask AR small"),
    ("segm_AR_m@100", "mask AR medium"), ("segm_AR_l@100", "mask AR large"),
    ("voc_mAP", "VOC mAP (evaluation.voc.eval_mode)"),
    ("voc_mAP_11points", "VOC mAP, 11 points (VOC2007)"),
    ("voc_mAP_area", "VOC mAP, area (VOC2010+)"),
)
TITLES = {"bbox_": "COCO bbox metrics", "segm_": "COCO segm metrics",
          "voc_": "VOC metrics"}  # key prefix -> table title


PER_CLASS_COLUMNS = ("AP", "AP50", "AP75", "AP_s", "AP_m", "AP_l")  # COCO's, in this order

EXAMPLES = examples(
    "det test retinanet_tiny_synth work_dirs/retinanet_tiny_synth/latest.pth",
    "det test my.toml work_dirs/my/best_bbox_mAP.pth --tta --out detections.json",
    "det test my.toml work_dirs/my/latest.pth --plots plots/ --conf-iou 0.5 --conf-score 0.3")


class Split(str, Enum):
    val = "val"
    test = "test"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):  # a count (VOC's voc_num_gts, voc_num_dets)
        return str(value)
    return "-1 (no GT)" if value < 0 else f"{value:.3f}"


def metric_label(key: str) -> str:
    """The row label of metric ``key``: :data:`METRIC_ROWS`', ``voc_AP50`` -> "VOC AP @[IoU
    0.5]", else the key itself."""
    label = dict(METRIC_ROWS).get(key)
    voc_at = re.fullmatch(r"voc_AP(\d+(?:\.\d+)?)", key)
    if label is None and voc_at:
        label = f"VOC AP @[IoU {float(voc_at[1]) / 100:g}]"
    return label or key


def metrics_table(columns: dict[str, dict[str, Any]]) -> Table:
    """Every number the evaluator reported (COCO's, VOC's), in its order, one column per run
    (e.g. "plain" and "tta")."""
    first = next(iter(columns.values()), {})
    keys = [k for k, v in first.items() if k != "per_class" and isinstance(v, (int, float))]
    titles = [t for prefix, t in TITLES.items() if any(k.startswith(prefix) for k in keys)]
    table = Table(title=" and ".join(titles) or "metrics", title_justify="left")
    table.add_column("metric")
    table.add_column("key", style="dim")
    for name in columns:
        table.add_column(name, justify="right")
    for key in keys:
        table.add_row(metric_label(key), key, *(_fmt(m.get(key)) for m in columns.values()))
    return table


def _per_class_keys(rows: list[dict[str, Any]]) -> list[str]:
    """The per-class value keys of ``rows``: COCO's (:data:`PER_CLASS_COLUMNS`) first, then any
    other metric's (VOC's ``voc_num_gts`` ... ``voc_AP``), in the order the first row has them."""
    present = list(rows[0]) if rows else []
    coco = [k for k in PER_CLASS_COLUMNS if k in present]
    return coco + [k for k in present if k != "class" and k not in coco]


def per_class_table(columns: dict[str, dict[str, Any]], gt_counts: list[int]) -> Table:
    """Every class's AP, AP50, AP75 and AP by area (and any other metric's per-class values),
    one column per value; with several runs (e.g. "plain" and "tta") one row per class and run."""
    table = Table(title="per-class AP", title_justify="left")
    table.add_column("class", no_wrap=True)
    runs = list(columns)
    if len(runs) > 1:
        table.add_column("run", style="dim")
    table.add_column("GT boxes", justify="right")
    rows = [m["per_class"] for m in columns.values()]
    keys = _per_class_keys(rows[0])
    for key in keys:
        table.add_column(key, justify="right")
    for k, entry in enumerate(rows[0]):
        gt = str(gt_counts[k]) if k < len(gt_counts) else "?"
        for run, per_class in zip(runs, rows):
            first = run == runs[0]
            lead = [entry["class"] if first else "", run] if len(runs) > 1 else [entry["class"]]
            table.add_row(*lead, gt if first else "",
                          *(_fmt(per_class[k].get(key)) for key in keys),
                          end_section=len(runs) > 1 and run == runs[-1])
    return table


MAX_CONFUSION_ROWS = 16  # K + 1 up to which det test prints the confusion matrix as a table


def confusion_table(report: Any) -> Table | None:
    """The report's confusion matrix (counts; rows GT, columns predicted, background last);
    None when it has more than :data:`MAX_CONFUSION_ROWS` rows (the PNG and --json have it)."""
    cm = report.confusion
    if len(cm.labels) > MAX_CONFUSION_ROWS:
        return None
    table = Table(title=f"confusion matrix (IoU {cm.iou_thr:g}, score >= {cm.score_thr:g}): "
                        "rows GT, columns predicted", title_justify="left")
    table.add_column("GT \\ predicted", no_wrap=True)
    for label in cm.labels:
        table.add_column(label, justify="right")
    for label, row in zip(cm.labels, cm.counts.tolist()):
        table.add_row(label, *(str(n) for n in row))
    return table


def error_table(report: Any) -> Table:
    """The TIDE-style breakdown: each error type's count and dAP50 (AP50 gained if fixed)."""
    eb = report.errors
    table = Table(title=f"where AP50 ({eb.ap50:.3f}) goes: what fixing each error type would "
                        "add", title_justify="left")
    for name in ("error type", "count", "dAP50"):
        table.add_column(name, justify="left" if name == "error type" else "right")
    for impact in eb.impacts:
        table.add_row(f"{impact.type.value} ({impact.type.short})", str(impact.count),
                      f"{impact.delta_ap:.3f}")
    return table


def worst_images_table(report: Any) -> Table:
    """The report's images with the most errors, by file name."""
    opts = report.options
    table = Table(title=f"images with the most errors (IoU {opts.conf_iou:g}, score >= "
                        f"{opts.conf_score:g}; open them with --show-dir)", title_justify="left")
    for name in ("file", "errors", "false positives", "missed GT"):
        table.add_column(name, justify="left" if name == "file" else "right")
    for image in report.worst_images:
        table.add_row(image.file_name, str(image.errors), str(image.false_positives),
                      str(image.missed))
    return table


@guarded
def test(
    config: ConfigArg,
    checkpoint: CheckpointArg,
    out: Annotated[Optional[Path], typer.Option(help="Write the detections here in COCO results "
                                                "format (JSON).")] = None,
    show_dir: Annotated[Optional[Path], typer.Option(help="Write one prediction-vs-GT PNG per "
                                                     "image here.")] = None,
    show_score_thr: Annotated[float, typer.Option(
        help="With --show-dir, draw detections scoring at least this.")] = 0.3,
    tta: Annotated[bool, typer.Option("--tta", help="Also run test-time augmentation (the test "
                                      "pipeline's MultiScaleFlipAug) and compare.")] = False,
    split: Annotated[Optional[Split], typer.Option(help="Dataset to test on (default: test, "
                                                   "else val).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per batch.")] = 1,
    plots: Annotated[Optional[Path], typer.Option(
        help="Write the evaluation pictures (PR curves at IoU 0.5 and 0.75, ...) and "
             "report.json here, and print the report's tables.")] = None,
    conf_iou: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="With --plots: the IoU a detection needs to match a GT box "
                               "(confusion matrix, errors per image).")] = 0.5,
    conf_score: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="With --plots: detections scoring below this are not "
                               "counted (confusion matrix, errors per image).")] = 0.3,
    device: DeviceOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Evaluate CHECKPOINT on the test (or val) data of CONFIG (COCO metrics unless
    evaluation.metric says otherwise)."""
    from detcli.evaluation.coco import write_results
    from detcli.evaluation.report import ReportOptions
    from detcli.engine.checkpoint_eval import evaluate_checkpoint

    cfg = load(config, overrides).cfg
    options = ReportOptions(conf_iou=conf_iou, conf_score=conf_score) if plots else None
    with JobProgress("testing", quiet=as_json) as job:
        run = evaluate_checkpoint(
            cfg, checkpoint, split=split.value if split else None, tta=tta,
            batch_size=batch_size, device=device, progress=job.step, report=options)
    for note in run.notes:
        err_console.print(f"note: {note}", style="yellow", highlight=False)
    if out is not None:
        write_results(out, run.results)
        err_console.print(f"wrote {plural(len(run.results), 'detection')} to {out}",
                          highlight=False)
    if show_dir is not None:
        _show(run, show_dir, show_score_thr, as_json)
    written = _plots(run.report, plots) if plots is not None and run.report else []
    if as_json:
        payload = {"checkpoint": str(checkpoint), "split": run.split,
                   "num_images": len(run.dataset), "metrics": run.metrics["plain"]}
        if "tta" in run.metrics:
            payload["metrics_tta"] = run.metrics["tta"]
        print_json({**payload, "out": str(out) if out else None,
                    "show_dir": str(show_dir) if show_dir else None,
                    "plots": str(plots) if plots else None,
                    "plot_files": [str(p) for p in written],
                    "report": run.report.to_json() if run.report else None})
        return
    console.print(metrics_table(run.metrics))
    gt_counts = getattr(run.dataset, "num_gts_per_class", None)
    console.print(per_class_table(run.metrics, gt_counts().tolist() if gt_counts else []))
    if run.report is not None:
        _print_report(run.report)


def _show(run, show_dir: Path, score_thr: float, quiet: bool) -> None:
    from detcli.viz.draw import show_predictions

    with JobProgress("drawing", total=len(run.dataset), quiet=quiet) as job:
        written = show_predictions(run.dataset, run.detections, show_dir, score_thr=score_thr,
                                   progress=job.step)
    err_console.print(f"wrote {plural(len(written), 'picture')} to {show_dir}", highlight=False)


def _print_report(report) -> None:
    confusion = confusion_table(report)
    if confusion is not None:
        console.print(confusion)
    else:
        err_console.print(f"the confusion matrix has {len(report.confusion.labels)} rows: see "
                          "confusion_matrix.png or --json", highlight=False)
    console.print(error_table(report))
    console.print(worst_images_table(report))


def _plots(report, plots: Path) -> list[Path]:
    from detcli.viz.report_plots import write_report_plots

    written = write_report_plots(report, plots)
    err_console.print(f"wrote {plural(len(written), 'file')} to {plots}: "
                      f"{', '.join(p.name for p in written)}", highlight=False)
    return written
