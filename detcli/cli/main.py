"""The ``det`` executable: wires one sub-app per command group.

``det`` alone prints a quick start (exit 0): the three commands from a data folder to a
trained model. ``det --version`` prints the installed version; ``-h`` is ``--help`` everywhere;
``det --install-completion`` installs shell completion (typer's).
"""

from __future__ import annotations

from typing import Annotated

import typer

from detcli.cli import (analyze, config, data, export, init, predict, presets, test, train,
                        viz, zoo)
from detcli.cli.common import DetCommand, DetGroup, console, examples

QUICK_START = """\
Quick start, from a folder of images and labels to a trained model:
  det init DATA_DIR             recognise COCO, VOC or YOLO data and write a config for it
  det train CONFIG              train it (checkpoints in work_dirs/<config name>/)
  det predict CONFIG CHECKPOINT IMAGES... --out predictions/
Or try it on synthetic shapes first:
  det data synth data/synth && det train retinanet_tiny_synth
Every command: det --help; one command: det train -h"""


def version() -> str:
    """The installed package's version (the source tree's when run from a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("detcli")
    except PackageNotFoundError:  # pragma: no cover - an uninstalled checkout
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        console.print(f"det {version()}", highlight=False)
        raise typer.Exit(0)


app = typer.Typer(
    name="det",
    cls=DetGroup,
    help="det: object detection from registered components and typed TOML configs.",
    invoke_without_command=True,
    add_completion=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print the version of det and exit.")] = False,
) -> None:
    """det: object detection from registered components and typed TOML configs."""
    if ctx.invoked_subcommand is None:
        console.print(f"det {version()}: object detection from registered components and typed "
                      f"TOML configs.\n", highlight=False)
        console.print(QUICK_START, highlight=False, markup=False)
        raise typer.Exit(0)


app.add_typer(config.app, name="config", help="Show, compare and describe configs.")
app.command("presets", cls=DetCommand,
            epilog=examples("det presets", "det presets --json"))(presets.presets)
app.command("zoo", cls=DetCommand, epilog=examples(*zoo.EXAMPLES_ARGS))(zoo.zoo)
app.add_typer(data.app, name="data", help="Make and check datasets.")
app.add_typer(analyze.app, name="analyze",
              help="Check a config against its data (anchors); compare training runs (logs).")
app.add_typer(viz.app, name="viz", help="Draw assignments and dataset samples.")
app.command("init", cls=DetCommand, epilog=init.EXAMPLES)(init.init)
app.command("train", cls=DetCommand, epilog=train.EXAMPLES)(train.train)
app.command("test", cls=DetCommand, epilog=test.EXAMPLES)(test.test)
app.add_typer(export.app, name="export", help="Export a trained detector (ONNX).")
app.command("predict", cls=DetCommand, epilog=predict.EXAMPLES)(predict.predict)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
