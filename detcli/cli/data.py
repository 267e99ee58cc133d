"""``det data``: make the synthetic dataset, and check a config's datasets.

``det data check`` exits 0 when every dataset is clean, 1 when it found problems (warnings
alone, such as boxes under a pixel, do not count), and the usual error codes when the config
itself cannot be loaded.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
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
    print_json,
)
from detcli.text import plural
from detcli.data.synth import SynthSpec

app = typer.Typer(cls=DetGroup, help="Make and check datasets.", no_args_is_help=True)

SPLITS = ("train", "val", "test")


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"
    all = "all"


@app.command(cls=DetCommand, epilog=examples(
    "det data synth data/synth",
    "det data synth data/big --num-train 2000 --image-size 512 --seed 1"))
@guarded
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the dataset.", show_default=False)],
    seed: Annotated[int, typer.Option(help="Random seed; a seed gives byte-identical files.")] = SynthSpec.seed,
    num_train: Annotated[int, typer.Option(help="Training images.")] = SynthSpec.num_train,
    num_val: Annotated[int, typer.Option(help="Validation images.")] = SynthSpec.num_val,
    image_size: Annotated[int, typer.Option(help="Longest image side in pixels; sides vary "
                                            "down to 5/8 of it.")] = SynthSpec.image_size,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Write a synthetic COCO-format dataset of coloured shapes (square, circle, triangle)."""
    from detcli.data.synth import make_synthetic_dataset

    made = make_synthetic_dataset(out_dir, num_train, num_val, image_size, seed)
    splits = {s: {"ann_file": str(made.ann_file(s)), "img_prefix": str(made.img_prefix(s))}
              for s in ("train", "val")}
    if as_json:
        print_json({"root": str(made.root), "classes": list(made.classes), **splits})
        return
    lines = ["# use it in a config:"]
    for split, paths in splits.items():
        lines += [f"[data.{split}]", 'type = "CocoDataset"',
                  f'ann_file = "{paths["ann_file"]}"', f'img_prefix = "{paths["img_prefix"]}/"']
    console.out("\n".join(lines), highlight=False)


def _counts_table(report) -> Table:
    table = Table(title=f"{report.split or 'dataset'}: {report.dataset_type} {report.source}",
                  title_justify="left", show_header=False, box=None, padding=(0, 2))
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("images", str(report.num_images))
    table.add_row("GT boxes", str(report.num_boxes))
    for name, count in report.boxes_per_class.items():
        table.add_row(f"  {name}", str(count), style="dim")
    table.add_row("ignore boxes", str(report.num_ignore_boxes))
    table.add_row("empty images", str(report.empty_images))
    for name, count in report.problem_counts().items():
        table.add_row(name.replace("_", " "), str(count), style="red" if count else None)
    return table


def _print_problems(report) -> None:
    """One line per problem (file, annotation, image, what): long lists stay readable and greppable."""
    console.print(f"{plural(len(report.problems), 'problem')} in {report.split or 'the dataset'}:",
                  style="bold")
    for p in report.problems:
        style = "red" if p.severity == "error" else "yellow"
        console.print(f"[{style}]{p.severity:7}[/] {p.kind:18} ", end="")
        console.print(str(p), markup=False, highlight=False)


def _summary(reports: list) -> str:
    parts = []
    for r in reports:
        warnings = len(r.problems) - r.num_errors
        parts.append(f"{r.split}: {plural(r.num_errors, 'error')}"
                     + (f", {plural(warnings, 'warning')}" if warnings else ""))
    return "; ".join(parts)


@app.command(cls=DetCommand, epilog=examples(
    "det data check my.toml",
    "det data check my.toml --split train --cheap --json"))
@guarded
def check(
    config: ConfigArg,
    split: Annotated[Split, typer.Option(help="Which dataset of the config to check.")] = Split.all,
    cheap: Annotated[bool, typer.Option("--cheap", help="Annotations and file existence only; "
                                        "no image decoding (what training runs first).")] = False,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Count images, boxes per class and problems of a config's datasets; list every problem.

    Exit status: 0 clean, 1 problems found.
    """
    from detcli.data.check import check_dataset
    from detcli.errors import ConfigError

    data = load(config, overrides).cfg.data
    names = SPLITS if split is Split.all else (split.value,)
    chosen = [(n, data.split(n)) for n in names if data.split(n) is not None]
    if not chosen:
        raise ConfigError(f"{config} has no dataset under data.{'/'.join(names)}")
    reports, seen, aliases = [], {}, []
    for name, cfg in chosen:
        key = cfg.model_dump_json(exclude={"pipeline"})  # val and test are often the same data
        if key in seen:
            aliases.append(f"{name}: the same dataset as {seen[key].split}, not checked twice")
            continue
        with Progress(console=err_console, transient=True, disable=as_json) as bar:
            task = bar.add_task(f"checking {name}", total=None)
            report = check_dataset(cfg, cheap=cheap, split=name,
                                   progress=lambda done, total: bar.update(task, completed=done, total=total))
        seen[key] = report
        reports.append(report)
    ok = all(r.ok for r in reports)
    if as_json:
        print_json({"ok": ok, "reports": [r.to_dict() for r in reports]})
    else:
        for report in reports:
            console.print(_counts_table(report))
            if report.problems:
                _print_problems(report)
        for line in aliases:
            console.print(line, style="dim", highlight=False)
        console.print(f"[green]clean[/] ({_summary(reports)})" if ok
                      else f"[red]problems found[/] ({_summary(reports)})")
    if not ok:
        raise typer.Exit(1)
