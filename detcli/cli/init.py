"""``det init DATA_DIR``: recognise a dataset, show what it holds, write a config for it.

The library decides (:mod:`detcli.data.discover`, :mod:`detcli.data.survey`,
:mod:`detcli.config.init_writer`, :mod:`detcli.analysis.anchor_fit`); this module shows and
asks. Every question has a flag, and ``--yes`` takes every default, so scripts run it without
a terminal. Exit status: 0 written, 2 a bad flag or an existing --out, 3 data it cannot use.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.prompt import Confirm, FloatPrompt, Prompt
from rich.table import Table

from detcli.cli.common import DebugOpt, DeviceOpt, console, err_console, examples, guarded, plural

MAX_PROBLEMS = 10  # problems listed per split; `det data check` lists them all
DEFAULT_VAL_SPLIT = 0.1

EXAMPLES = examples(
    "det init data/my_yolo --yes",
    "det init data/coco --preset retinanet_r50 --out configs/coco.toml",
    "det init data/shapes --format yolo --classes square,circle --val-split 0.2 --yes",
)


class Format(str, Enum):
    coco = "coco"
    voc = "voc"
    yolo = "yolo"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The datasets' and the analysis' INFO lines (kept/dropped counts): the tables say it."""
    loggers = [logging.getLogger(n) for n in ("detcli.data.datasets", "detcli.analysis")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ask(yes: bool, question: str, default: str) -> str:
    if yes:
        return default
    return Prompt.ask(question, default=default, console=console)


def _split_table(surveys: dict) -> Table:
    table = Table(title="what det init found", title_justify="left", title_style="bold")
    for header in ("split", "images", "GT boxes", "empty images", "errors", "warnings", "from"):
        table.add_column(header, justify="left" if header in ("split", "from") else "right")
    for name, s in surveys.items():
        r = s.report
        table.add_row(name, str(s.num_images), str(r.num_boxes), str(r.empty_images),
                      str(r.num_errors), str(len(r.problems) - r.num_errors), s.source.found)
    return table


def _class_table(classes: tuple[str, ...], surveys: dict, source: str) -> Table:
    table = Table(title=f"{plural(len(classes), 'class', 'classes')} (from {source})", title_justify="left",
                  title_style="bold")
    table.add_column("label", justify="right")
    table.add_column("class")
    for name in surveys:
        table.add_column(f"{name} boxes", justify="right")
    for k, cls in enumerate(classes):
        table.add_row(str(k), cls, *(str(s.report.boxes_per_class.get(cls, 0)) for s in surveys.values()))
    return table


def _size_table(surveys: dict) -> Table:
    table = Table(title="box sizes (sqrt of the area, original pixels; COCO's small < 32, "
                  "medium < 96)", title_justify="left", title_style="bold")
    for header in ("split", "small", "medium", "large", "5%", "median", "95%", "images (w x h)"):
        table.add_column(header, justify="left" if header == "split" else "right")
    for name, s in surveys.items():
        counts, q = s.size_counts(), s.side_quantiles()
        if len(s.image_wh):
            w, h = s.image_wh[:, 0], s.image_wh[:, 1]
            images = f"{w.min():.0f}-{w.max():.0f} x {h.min():.0f}-{h.max():.0f}"
        else:
            images = "-"
        table.add_row(name, str(counts["small"]), str(counts["medium"]), str(counts["large"]),
                      *(f"{v:.0f}" for v in q) if q else ("-", "-", "-"), images)
    return table


def _print_problems(surveys: dict) -> None:
    for name, s in surveys.items():
        problems = s.report.problems
        if not problems:
            continue
        console.print(f"{name}: {plural(len(problems), 'problem')} (det data check --cheap):", style="bold")
        for p in problems[:MAX_PROBLEMS]:
            style = "red" if p.severity == "error" else "yellow"
            console.print(f"  [{style}]{p.severity}[/] {p.kind}: ", end="")
            console.print(str(p), markup=False, highlight=False)
        if len(problems) > MAX_PROBLEMS:
            console.print(f"  ... and {len(problems) - MAX_PROBLEMS} more: det data check CONFIG "
                          "lists them all", style="dim")


def _classes(layout, given: Optional[str], yes: bool) -> tuple[str, ...]:
    """The class names: --classes, else the layout's, else asked (YOLO without names); YOLO
    needs a name for every class number its labels use."""
    from detcli.errors import DataError

    if given is not None:
        names = tuple(n.strip() for n in given.split(",") if n.strip())
        if not names:
            raise DataError(f"--classes {given!r} names no class; give them comma-separated")
    elif layout.classes is not None:
        names = layout.classes
    else:
        count = max(layout.num_label_classes, 1)
        default = ",".join(f"class_{k}" for k in range(count))
        console.print(f"the labels use {plural(count, 'class number')} (0 to {count - 1}), but the "
                      f"folder does not name them ({layout.classes_source})", highlight=False)
        answer = _ask(yes, "class names, comma-separated, in label order", default)
        names = tuple(n.strip() for n in answer.split(",") if n.strip())
    if len(names) < layout.num_label_classes:
        raise DataError(f"{len(names)} class names for labels numbered up to "
                        f"{layout.num_label_classes - 1}", hint=f"give {layout.num_label_classes} names")
    return names


def _split_plan(surveys: dict, val_split: Optional[float], seed: int, yes: bool):
    from detcli.config.init_writer import SplitPlan
    from detcli.data.survey import seeded_split

    if "val" in surveys:
        if val_split is not None:
            console.print(f"--val-split {val_split:g} ignored: the data has a val split", style="yellow")
        return SplitPlan(fraction=0.0)
    train = surveys["train"]
    if val_split is None:
        console.print(f"no val split: det init can hold out a seeded share of the "
                      f"{train.num_images} training images (0 for none)", highlight=False)
        val_split = DEFAULT_VAL_SPLIT if yes else FloatPrompt.ask(
            "share of the training images for val", default=DEFAULT_VAL_SPLIT, console=console)
    if val_split == 0:
        return SplitPlan(fraction=0.0)
    train_index, val_index = seeded_split(train.num_images, val_split, seed)
    return SplitPlan(val_split, seed, train_index, val_index)


def _gpu(device: Optional[str]) -> bool:
    if device is not None:
        return device.startswith("cuda")
    import torch

    return torch.cuda.is_available()


@guarded
def init(
    data_dir: Annotated[Path, typer.Argument(help="The folder of images and labels (COCO, VOC or YOLO).",
                                             show_default=False)],
    fmt: Annotated[Optional[Format], typer.Option(
        "--format", help="The layout, when the folder matches several (default: recognised).")] = None,
    classes: Annotated[Optional[str], typer.Option(
        "--classes", metavar="NAME,NAME,...",
        help="Class names in label order (YOLO without data.yaml / classes.txt; a COCO or VOC "
             "subset).")] = None,
    val_split: Annotated[Optional[float], typer.Option(
        "--val-split", metavar="SHARE",
        help="Without a val split: hold out this share of the training images (seeded), 0 for "
             f"none (default {DEFAULT_VAL_SPLIT}).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the val split.")] = 0,
    preset: Annotated[Optional[str], typer.Option(
        "--preset", metavar="NAME", help="The base preset (default: the suggested one; det presets lists them).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Where to write the config (default: ./<DATA_DIR name>.toml).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Accept every default; ask nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    device: DeviceOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Recognise a COCO, VOC or YOLO folder, show what it holds, and write a config for it that
    extends a suggested preset; ends with the det train command to run."""
    from detcli.config.init_writer import splits_dir, suggest_preset, write_init_config
    from detcli.config.loader import load_config
    from detcli.data.discover import discover
    from detcli.data.survey import survey_layout
    from detcli.errors import ConfigError
    from detcli.analysis.anchor_fit import check_anchor_fit

    layout = discover(data_dir, fmt.value if fmt else None)
    console.print(f"{layout.root}: {layout.format.upper()} layout ({layout.dataset_type})", style="bold",
                  highlight=False)
    for note in layout.notes:
        console.print(f"  note: {note}", style="dim", highlight=False)
    names = _classes(layout, classes, yes)
    with tempfile.TemporaryDirectory(prefix="det-init-") as scratch, _quiet(), \
            err_console.status("reading the annotations", spinner="dots"):
        surveys = survey_layout(layout, names, Path(scratch))
    console.print(_split_table(surveys))
    source = ("--classes" if classes is not None else layout.classes_source
              if layout.classes is not None else "your answer" if not yes else "default names")
    console.print(_class_table(names, surveys, source))
    console.print(_size_table(surveys))
    _print_problems(surveys)

    plan = _split_plan(surveys, val_split, seed, yes)
    choice = suggest_preset(surveys["train"], _gpu(device))
    console.print(f"suggested preset: [bold]{choice.name}[/]: {choice.reason}", highlight=False)
    chosen = preset or _ask(yes, "base preset", choice.name)
    load_config(chosen)  # an unknown name fails here, with did-you-mean
    target = out or Path(_ask(yes, "write the config to", f"{layout.root.name}.toml"))
    if target.exists() and not force:
        if yes or not Confirm.ask(f"{target} exists; overwrite it?", default=False, console=console):
            raise ConfigError(f"{target} exists; det init does not overwrite it",
                              hint="pass --force, or choose another --out")
    header = (f"Written by `det init {layout.root}`: {layout.format.upper()} data, {len(names)} "
              f"classes.\nBase preset {chosen}" + (f": {choice.reason}" if chosen == choice.name else "")
              + (f"\nval: a {plan.fraction:g} share of the training images, seed {plan.seed} "
                 f"(files in {splits_dir(target.resolve()).name}/)" if plan.fraction else ""))
    written = write_init_config(layout, names, surveys, chosen, target, plan, header)
    console.print(f"wrote {written.path}", style="green", highlight=False)
    for path in written.files:
        console.print(f"  and {path}", highlight=False)

    with _quiet(), err_console.status("checking the anchors against the data", spinner="dots"):
        fit = check_anchor_fit(load_config(written.path).cfg, written.shown)
    style = {"fits": "green", "not_applicable": "dim"}.get(fit.verdict, "yellow")
    console.print(fit.message, style=style, highlight=False, markup=False)
    if fit.fix:
        console.print(f"  fix: {fit.fix}", highlight=False, markup=False)
    if any(s.report.num_errors for s in surveys.values()):
        console.print("the data has errors: training stops at the first one unless the config "
                      'sets data.on_bad_image = "skip"', style="yellow")
    console.print("next:", style="bold")
    console.out(f"  {written.command}", highlight=False)
