"""``det config``: show, diff and describe configs."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.syntax import Syntax
from rich.tree import Tree

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

app = typer.Typer(cls=DetGroup, help="Show, compare and describe configs.", no_args_is_help=True)


class Format(str, Enum):
    toml = "toml"
    json = "json"


def _print_toml(text: str) -> None:
    if console.is_terminal:
        console.print(Syntax(text, "toml", theme="ansi_dark", background_color="default", word_wrap=False))
    else:
        console.out(text, end="", highlight=False)


@app.command(cls=DetCommand, epilog=examples(
    "det config show retinanet_r50",
    "det config show my.toml --resolved --origin --set optimizer.lr=0.02"))
@guarded
def show(
    config: ConfigArg,
    resolved: Annotated[bool, typer.Option("--resolved", help="Merge the extends chain, apply --set, "
                                           "validate, and fill in every default.")] = False,
    origin: Annotated[bool, typer.Option("--origin", help="Annotate each value with the file:line, "
                                         "--set or default it came from (implies --resolved).")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.toml,
    overrides: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Print a config: the file as written with its extends chain, or the resolved config."""
    from detcli.config import emit
    from detcli.config.loader import display_path, resolve_file
    from detcli.config.presets import resolve_reference
    from detcli.config.tree import format_path

    if not (resolved or origin or overrides):
        _, _, files = resolve_file(resolve_reference(config))
        if fmt is Format.json:
            print_json({"file": display_path(files[-1]), "extends_chain": [display_path(f) for f in files]})
            return
        _print_chain(files)
        _print_toml(files[-1].read_text(encoding="utf-8"))
        return
    loaded = load(config, overrides)
    tree = loaded.resolved()
    if fmt is Format.json:
        data = {"config": tree}
        if origin:
            data["origins"] = {format_path(p): o for p, o in loaded.origins.items()}
        print_json(data)
        return
    chain = " <- ".join(display_path(f) for f in reversed(loaded.files))
    header = f"resolved from {chain}" + "".join(f"\n--set {o}" for o in loaded.overrides)
    _print_toml(emit.to_toml(tree, loaded.origins if origin else None, header=header))


def _print_chain(files: list[Path]) -> None:
    from detcli.config.loader import display_path

    if len(files) == 1:
        return
    if not console.is_terminal:
        console.out("# extends chain (bases apply in this order, the file last):", highlight=False)
        for f in files:
            console.out(f"#   {display_path(f)}", highlight=False)
        console.out("", highlight=False)
        return
    tree = Tree(f"[bold]{display_path(files[-1])}[/]")
    for base in files[:-1]:
        tree.add(display_path(base))
    console.print("extends chain (bases apply in this order, the file last):", style="dim")
    console.print(tree)
    console.rule(style="dim")


@app.command(cls=DetCommand, epilog=examples(
    "det config diff retinanet_r50 retinanet_r101",
    "det config diff my.toml retinanet_tiny_synth --json"))
@guarded
def diff(
    a: Annotated[Path, typer.Argument(help="The first config.", show_default=False)],
    b: Annotated[Path, typer.Argument(help="The second config.", show_default=False)],
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Compare two resolved configs key by key. Exit status: 0 equal, 1 different."""
    from detcli.config.diff import diff as diff_trees
    from detcli.config.emit import value

    left, right = load(a, overrides).resolved(), load(b, overrides).resolved()
    changes = diff_trees(left, right)
    if as_json:
        print_json([c.__dict__ for c in changes])
    elif not changes:
        err_console.print(f"{a} and {b} resolve to the same config")
    else:
        marks = {"added": ("+", "green"), "removed": ("-", "red"), "changed": ("~", "yellow")}
        for c in changes:
            mark, style = marks[c.kind]
            if c.kind == "changed":
                text = f"{mark} {c.path}: {value(c.old)} -> {value(c.new)}"
            else:
                text = f"{mark} {c.path}: {value(c.new if c.kind == 'added' else c.old)}"
            console.print(text, style=style, highlight=False, markup=False)
        counts = {k: sum(c.kind == k for c in changes) for k in marks}
        err_console.print(f"{counts['changed']} changed, {counts['added']} added, {counts['removed']} removed "
                          f"({a} -> {b})", style="dim", highlight=False)
    if changes:
        raise typer.Exit(1)


@app.command(cls=DetCommand, epilog=examples(
    "det config schema --out det.schema.json"))
@guarded
def schema(
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write to this file instead of stdout.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Write the JSON Schema of the config language, for editor completion and validation."""
    from detcli.config.root import DetConfig
    from detcli.registry import ensure_current

    ensure_current()
    text = json.dumps(DetConfig.model_json_schema(), indent=2) + "\n"
    if out is None:
        console.out(text, end="", highlight=False)
    else:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"wrote {out}")


@app.command("import", cls=DetCommand, epilog=examples(
    "det config import mmdetection/configs/retinanet/retinanet_r18_fpn_1x_coco.py --out r18.toml",
    "det config import my_mmdet_cfg.py --mmdet-configs mmdetection/configs --json"))
@guarded
def import_(
    source: Annotated[Path, typer.Argument(help="An MMDetection 2.x / 3.x Python config; read, "
                                           "never executed.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Write the det TOML here (default: print it).")] = None,
    mmdet_configs: Annotated[Optional[Path], typer.Option(
        "--mmdet-configs", help="MMDetection's configs folder, for _base_ paths that point "
        "into it.")] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Translate an MMDetection config into a det TOML extending the closest preset, listing
    every key not translated and why."""
    from detcli.config.mmdet_import import import_mmdet_config

    folder = out.parent if out is not None else Path.cwd()
    result = import_mmdet_config(source, mmdet_configs, out_folder=folder)
    if out is not None:
        out.write_text(result.text, encoding="utf-8")
    if as_json:
        print_json({"preset": result.preset, "shared_values": result.shared,
                    "out": str(out) if out else None, "toml": result.text,
                    "files": [str(f) for f in result.files],
                    "untranslated": [u.__dict__ for u in result.untranslated]})
        return
    if out is None:
        _print_toml(result.text)
    err_console.print(f"extends {result.preset} ({result.shared} values equal); "
                      f"{len(result.untranslated)} keys not translated (listed in the file's "
                      f"header){f'; wrote {out}' if out else ''}", highlight=False)
