"""``det analyze``: check a config against its data. ``det analyze anchors``: anchor coverage.
``det analyze logs``: training runs compared from their ``metrics.jsonl``.

Tables go to stdout (rich tables in a terminal, plain aligned text when piped); progress and
logs to stderr. ``--json`` prints the report (docs/analyze.md); ``--out DIR`` writes it as
``report.json`` with the PNG plots. Exit status 0 whatever the coverage; 2 for a config the
analysis does not apply to (an anchor-free head), 3 for unusable data.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, Sequence

import typer
from rich.table import Table

from detcli.cli.common import (
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
    plural,
    print_json,
    shown_default,
)

if TYPE_CHECKING:
    from detcli.analysis.anchor_optimize import OptimizeResult
    from detcli.analysis.anchor_stats import AnchorSummary, GroupStats
    from detcli.analysis.train_logs import LogComparison, MetricPoint, RunSummary

app = typer.Typer(cls=DetGroup, help="Check a config against its data; compare training runs.",
                  no_args_is_help=True)
MAX_LISTED = 20  # zero-positive GTs listed in the terminal; all of them are in the JSON


class Split(str, Enum):
    train = "train"
    val = "val"


class Objective(str, Enum):
    coverage = "coverage"
    mean_iou = "mean-iou"


class XAxis(str, Enum):
    epoch = "epoch"
    iter = "iter"


def _pct(share: Optional[float]) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _num(value: Optional[float], fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def _emit_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table in a terminal, plain aligned columns when piped."""
    if console.is_terminal:
        table = Table(title=title, title_justify="left", title_style="bold")
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                              for i, (h, w) in enumerate(zip(headers, widths)))]
    lines += ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    console.out("\n".join(lines) + "\n", highlight=False)


def _group_row(name: str, g: GroupStats, ignored: str = "-") -> list[str]:
    iou, pos = g.best_iou, g.positives_per_gt
    return [name, str(g.num_gt), _num(iou and iou.median), _num(iou and iou.q05),
            _pct(g.best_iou_above_pos_thr_share), _num(pos and pos.mean, ".1f"),
            _num(pos and pos.median, "g"), _pct(g.zero_positive_share),
            _pct(g.low_quality_only_share), ignored]


def _describe(summary: AnchorSummary) -> list[str]:
    a, geo, ds = summary.anchors, summary.geometry, summary.dataset
    scales = (f"octave_base_scale {a['octave_base_scale']:g} x {a['scales_per_octave']} scales"
              if a.get("octave_base_scale") is not None else f"scales {a.get('scales_used')}")
    assigner = ", ".join(f"{k} {v}" for k, v in summary.assigner.items()
                         if k in ("pos_iou_thr", "neg_iou_thr", "min_pos_iou", "topk",
                                  "regress_ranges", "center_sampling", "soft_center_radius",
                                  "iou_weight"))
    resize = (f"img_scale {geo['img_scale']}" if geo["img_scale"] else
              f"scale_factor {geo['scale_factor']}" if geo["scale_factor"] else "no resize")
    pad = ", ".join(f"{k} {v}" for k, v in (geo["pad"] or {}).items()) or "none"
    priors = (f"points: {a.get('type')} strides {a.get('strides')}, offset {a.get('offset')} "
              "(IoU and best level measured on each point's stride-sized cell)"
              if summary.point_based else
              f"anchors ({a.get('config_key', 'model.bbox_head.anchor_generator')}): "
              f"{a.get('type')} strides {a.get('strides')}, {scales}, ratios "
              f"{a.get('ratios')} ({a['num_base_priors'][0]} per location)")
    predictions = summary.assigner.get("predictions")  # an assigner ranking by predictions
    return [
        priors,
        f"{summary.assigner.get('config_key', 'model.train_cfg.assigner')}: "
        f"{summary.assigner.get('type')} {assigner}; sampler {summary.sampler.get('type')}",
        *([f"  ranked by {predictions}"] if predictions else []),
        f"data.{summary.split}: {ds.num_images_analysed} of "
        f"{plural(ds.num_images, 'image')}, {plural(ds.num_gt, 'GT box', 'GT boxes')}; "
        f"sizes from {geo['pipeline']} ({resize}, pad {pad})",
    ]


def _print_report(summary: AnchorSummary, title: str = "") -> None:
    for line in _describe(summary):
        console.print(line, highlight=False, markup=False)
    headers = ["GT group", "GTs", "IoU median", "IoU q05", ">= pos thr", "pos/GT", "pos median",
               "zero pos", "low-quality only", "ignored anchors"]
    rows = [_group_row("all", summary.overall)]
    rows += [_group_row(name, g) for name, g in summary.by_size.items()]
    rows += [_group_row(f"level {e.level} (stride {e.stride[0]})", e.gts, _pct(e.ignored_prior_share))
             for e in summary.by_level]
    _emit_table(f"{title}best anchor IoU and positives per GT (sizes in network-input pixels; "
                "a level row holds the GTs whose best anchor is on it)", headers, rows)
    levels = [f"L{e.level} s{e.stride[0]}" for e in summary.by_level]
    groups = [("all", summary.overall), *summary.by_size.items()]
    _emit_table(f"{title}level each GT lands on (its best anchor's)", ["GT group", *levels],
                [[name, *(_pct(s) for s in g.level_share)] for name, g in groups])
    _emit_table(f"{title}level of each group's positives (share per level)",
                ["GT group", *levels],
                [[name, *(_pct(s) for s in g.positive_level_share)] for name, g in groups])
    _print_zero_positive(summary)


def _print_zero_positive(summary: AnchorSummary) -> None:
    zero = summary.zero_positive_gts
    total = summary.overall.num_gt
    style = "red" if zero else "green"
    prior = "point" if summary.point_based else "anchor"
    console.print(f"zero-positive share: {_pct(summary.zero_positive_share)} ({len(zero)} of "
                  f"{plural(total, 'GT box', 'GT boxes')} get no positive {prior}: the "
                  f"detector can never learn them)",
                  style=style, highlight=False, markup=False)
    for gt in zero[:MAX_LISTED]:
        w, h = gt.size
        console.print(f"  {gt.image}  box {gt.box}  {w:g}x{h:g} px (input {gt.input_size[0]:g}x"
                      f"{gt.input_size[1]:g})  {gt.class_name}  best IoU {gt.best_iou:.3f} "
                      f"on level {gt.best_level}", highlight=False, markup=False)
    if len(zero) > MAX_LISTED:
        console.print(f"  ... and {len(zero) - MAX_LISTED} more (all of them are in --json and "
                      "--out's report.json)", highlight=False, markup=False)


def _print_optimized(result: OptimizeResult, config: str) -> None:
    before, after = result.before.stats, result.after.stats
    pb, pa = result.params_before, result.params_after

    def scale(p: Any) -> str:
        return f"{p.octave_base_scale:g}" if p.scales is None else str(list(p.scales))

    def row(name: str, key: Any) -> list[str]:
        return [name, key(before), key(after)]

    rows = [
        ["octave_base_scale" if pb.scales is None else "scales", scale(pb), scale(pa)],
        ["ratios", str(list(pb.ratios)), str(list(pa.ratios))],
        row("zero-positive share", lambda s: _pct(s.zero_positive_share)),
        row("mean best IoU", lambda s: _num(s.overall.best_iou.mean)),
        row("best IoU >= pos thr", lambda s: _pct(s.overall.best_iou_above_pos_thr_share)),
        row("low-quality only", lambda s: _pct(s.overall.low_quality_only_share)),
        row("positives per GT", lambda s: _num(s.overall.positives_per_gt.mean, ".1f")),
        row("ignored anchors", lambda s: _pct(s.priors.ignored_share)),
    ]
    _emit_table(f"--optimize ({result.objective}, {result.evaluations} designs scored in "
                f"{result.seconds:.1f} s)", ["", "configured", "optimised"], rows)
    console.print("paste into the config:", style="bold")
    console.out(result.toml(), highlight=False)
    console.print(f"or try it first: det analyze anchors {config} "
                  + " ".join(f"--set '{arg}'" for arg in result.set_args()), highlight=False, markup=False)


def _write_out(out: Path, analysis: Any) -> list[Path]:
    from detcli.viz.plots import write_plots

    out.mkdir(parents=True, exist_ok=True)
    written = write_plots(analysis.report, out)
    if analysis.optimized is not None:
        written += write_plots(analysis.optimized.after, out, suffix="_optimized")
    path = out / "report.json"
    path.write_text(json.dumps(analysis.to_dict(), indent=2) + "\n", encoding="utf-8")
    return [*written, path]


@app.command(cls=DetCommand, epilog=examples(
    "det analyze anchors retinanet_tiny_synth",
    "det analyze anchors my.toml --optimize --out anchors/"))
@guarded
def anchors(
    config: ConfigArg,
    split: Annotated[Split, typer.Option(help="Which dataset's GT boxes to analyse.")] = Split.val,
    max_images: Annotated[Optional[int], typer.Option(
        "--max-images", min=1, help="Analyse the first N images only.")] = None,
    optimize: Annotated[bool, typer.Option(
        "--optimize", help="Search octave_base_scale (or scales) and ratios for this data; "
        "prints before/after tables and a TOML snippet.")] = False,
    objective: Annotated[Objective, typer.Option(
        help="What --optimize maximises: the share of GTs with a positive anchor (then mean "
        "best IoU), or mean best IoU (then that share).")] = Objective.coverage,
    max_evals: Annotated[int, typer.Option(
        "--max-evals", min=2, help="The most anchor designs --optimize scores.")] = 100,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Write report.json and PNG plots (best-IoU histograms, GT sizes with "
        "anchor shapes) to this folder.")] = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Do the configured anchors fit the dataset? Runs the configured assigner on the GT boxes
    at test size (no network, no weights): best IoU per GT, positives per GT, the GTs that get
    none, by size and by FPN level.

    A query-based detector (DETR) has no priors: it says so and reports the GT per image
    against model.num_queries and the GT sizes against the input instead."""
    from rich.progress import Progress

    from detcli.config.loader import display_path
    from detcli.analysis.anchor_analysis import AnchorStudy
    from detcli.analysis.anchor_optimize import AnchorAnalysis
    from detcli.analysis.capabilities import num_queries
    from detcli.cli.analyze_queries import analyze_queries

    cfg = load(config, overrides).cfg
    if num_queries(cfg.model) is not None:  # no priors (cli/analyze_queries.py)
        analyze_queries(cfg, split.value, max_images, optimize=optimize, out=out,
                        as_json=as_json, config_name=display_path(config))
        return
    with err_console.status(f"reading data.{split.value} and assigning", spinner="dots"):
        study = AnchorStudy.from_config(cfg, split.value, max_images, display_path(config))
        analysis = AnchorAnalysis(study.report())
    if optimize:
        from detcli.analysis.anchor_optimize import optimize_anchors

        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("searching anchor designs", total=None)
            analysis.optimized = optimize_anchors(
                study, objective.value, max_evals,
                progress=lambda done, most: bar.update(task, completed=done, total=most))
    if out is not None:
        for path in _write_out(out, analysis):
            err_console.print(f"wrote {path}", highlight=False)
    if as_json:
        print_json(analysis.to_dict())
        return
    _print_report(analysis.report.stats)
    if analysis.optimized is not None:
        _print_optimized(analysis.optimized, display_path(config))


def _point(point: Optional[MetricPoint]) -> str:
    return "-" if point is None else f"{point.value:.4f} (epoch {point.epoch})"


def _epochs(run: RunSummary) -> str:
    if run.epochs_done is None:
        return "-"
    done = f"{run.epochs_done:.4g}"
    return done if run.max_epochs is None else f"{done}/{run.max_epochs:.4g}"


def _duration(seconds: float) -> str:
    """``12.3 s`` under a minute, else ``h:mm:ss`` (as the training log's eta)."""
    if seconds < 60:
        return f"{max(seconds, 0):.1f} s"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _print_logs(comparison: LogComparison) -> None:
    rows = [[run.name, run.metric, _point(run.best), _point(run.final), _epochs(run),
             f"{run.iters_done}" + (f"/{run.max_iters}" if run.max_iters else ""),
             _duration(run.train_seconds), _num(run.seconds_per_iter),
             _num(run.last_loss, ".4f")] for run in comparison.runs]
    _emit_table("training runs (train time: the iterations' own time, evaluation excluded)",
                ["run", "metric", "best", "final", "epochs", "iterations", "train time",
                 "s/iter", "last loss"], rows)


@app.command(cls=DetCommand, epilog=examples(
    "det analyze logs work_dirs/retinanet_tiny_synth",
    "det analyze logs work_dirs/retinanet work_dirs/fcos --keys loss_cls,bbox_mAP --out cmp.png",
    "det analyze logs work_dirs/*/ --json"))
@guarded
def logs(
    work_dirs: Annotated[list[Path], typer.Argument(
        metavar="WORK_DIR...", show_default=False,
        help="det train work dirs (or their metrics.jsonl files).")],
    keys: Annotated[Optional[list[str]], typer.Option(
        "--keys", "-k", metavar="KEY[,KEY...]",
        help="What to draw, one panel each: train keys (loss, loss_cls, lr, grad_norm, time, "
        "...) or evaluation metrics (bbox_mAP, bbox_mAP_50, ...); comma-separated or repeated. "
        + shown_default("loss and the save_best metric"))] = None,
    x: Annotated[Optional[XAxis], typer.Option(
        "--x", help="The x axis: epochs (iteration / iterations per epoch) or iterations. "
        + shown_default("epoch for an EpochBasedRunner run"))] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", metavar="PNG", help="Draw the chart there: a panel per key, a line per run.")
    ] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compare training runs: best and final value of the metric that picks the best checkpoint
    (evaluation.save_best), epochs and iterations done, training time; with --out, their curves
    (the same key of every run on one axis, a legend per run)."""
    from detcli.analysis.train_logs import compare_runs, read_runs
    from detcli.viz.curves import write_comparison

    wanted = [k.strip() for item in keys or [] for k in item.split(",") if k.strip()]
    runs = read_runs(work_dirs)
    comparison = compare_runs(runs, wanted, x.value if x else None)
    chart = write_comparison(runs, comparison.keys, comparison.x, out) if out else None
    if as_json:
        print_json({**comparison.to_dict(), "chart": str(chart) if chart else None})
    else:
        _print_logs(comparison)
    drawn = ", ".join(comparison.keys) or "the curves"
    if chart is not None:
        err_console.print(f"wrote {chart} ({drawn} by {comparison.x})", highlight=False,
                          markup=False)
    elif not as_json:
        err_console.print(f"add --out PNG to draw {drawn} for each run", style="dim",
                          highlight=False, markup=False)
