"""The ``det`` executable: wires one sub-app per command group."""

from __future__ import annotations

import typer

from detcli.cli import analyze, config, data, export, predict, presets, test, train, viz

app = typer.Typer(
    name="det",
    help="det: object detection from registered components and typed TOML configs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(config.app, name="config", help="Show, compare and describe configs.")
app.command("presets")(presets.presets)
app.add_typer(data.app, name="data", help="Make and check datasets.")
app.add_typer(analyze.app, name="analyze", help="Check a config against its data (anchors).")
app.add_typer(viz.app, name="viz", help="Draw assignments and dataset samples.")
app.command("train")(train.train)
app.command("test")(test.test)
app.add_typer(export.app, name="export", help="Export a trained detector (ONNX).")
app.command("predict")(predict.predict)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
