"""``det analyze anchors`` on a query-based detector (DETR): no priors to analyse, so it says
so and reports the GT against the queries and the input scale instead
(:mod:`detcli.analysis.query_gt`). ``detcli.cli.analyze.anchors`` hands such a config here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from detcli.cli.common import console, err_console, plural, print_json


def _row(name: str, stats: dict[str, float], fmt: str) -> str:
    keys = ("min", "q05", "q25", "median", "q75", "q95", "max", "mean")
    return f"  {name:<16}" + "  ".join(f"{k} {stats[k]:{fmt}}" for k in keys)


def _lines(report: Any, config_name: str) -> list[str]:
    data = report.dataset
    scale = ("no Resize: original sizes" if report.input_scale is None
             else f"input scale {report.input_scale[0]}x{report.input_scale[1]} (w x h)")
    lines = [
        f"[bold]{config_name}: model ({report.detector}) is a query-based detector: it has no "
        f"priors (anchors or points) to analyse.[/] Training matches its {report.num_queries} "
        f"queries (model.num_queries) to each image's GT one to one, at least total cost "
        f"({', '.join(report.match_costs) or 'train_cfg = false'}); every other query learns "
        "background. Instead, the GT against the queries and the input:",
        f"{data['source']}: {data['num_gt']} GT boxes in {data['num_images_analysed']} of "
        f"{data['num_images']} images; {scale}",
        _row("GT per image", report.gt_per_image, ".4g"),
        _row("GT side px", report.side_px, ".1f"),
        _row("GT side / image", report.side_of_image, ".3f"),
        "  size buckets    " + ", ".join(f"{k} {v}" for k, v in report.size_buckets.items()),
    ]
    if report.images_over_queries:
        listed = ", ".join(f"{o['file']} ({o['num_gt']})" for o in report.over_queries)
        more = report.images_over_queries - len(report.over_queries)
        lines.append(f"[red]{plural(report.images_over_queries, 'image')} with more GT boxes "
                     f"than the {report.num_queries} queries, "
                     f"{plural(report.gt_unmatchable, 'GT box', 'GT boxes')} never matched: "
                     f"{listed}{f' and {more} more' if more else ''}[/]; raise model.num_queries")
    else:
        lines.append(f"every image has at most {report.num_queries} GT boxes: each can be matched")
    lines.append("det viz assign IMAGE -c CONFIG --ann ANN shows an image's matching and its "
                 "cost terms")
    return lines


def analyze_queries(cfg: Any, split: str, max_images: Optional[int], *, optimize: bool,
                    out: Optional[Path], as_json: bool, config_name: str) -> None:
    """``det analyze anchors`` for a query-based detector (module docstring)."""
    from detcli.analysis.query_gt import query_gt_report
    from detcli.errors import ConfigError

    if optimize:
        raise ConfigError(f"--optimize: model ({cfg.model.type}) is a query-based detector "
                          "with no anchors to optimise",
                          hint="its queries are learned; model.num_queries is the setting "
                               "that matters against the data (this report without --optimize)")
    with err_console.status(f"reading data.{split}", spinner="dots"):
        report = query_gt_report(cfg, split, max_images)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        path = out / "report.json"
        path.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        err_console.print(f"wrote {path}", highlight=False)
    if as_json:
        print_json(report.to_dict())
        return
    for line in _lines(report, config_name):
        console.print(line, highlight=False)
