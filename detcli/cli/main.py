"""The ``det`` executable: wires one sub-app per command group."""

from __future__ import annotations

import typer

from detcli.cli import config, data

app = typer.Typer(
    name="det",
    help="det: object detection from registered components and typed TOML configs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(config.app, name="config", help="Show, compare and describe configs.")
app.add_typer(data.app, name="data", help="Make and check datasets.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
