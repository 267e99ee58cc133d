"""What every command shares: option aliases, the output sink, and the error table.

Library errors (``detcli.errors``) become one readable block on stderr and an exit code from
``EXIT_CODES``; with ``--debug`` (or ``DET_DEBUG=1``) the traceback is shown instead.
Only this package prints; the library logs and raises.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler

from detcli.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DetError,
    PluginError,
    RegistryError,
    StorageError,
)

console = Console(soft_wrap=True)  # results: stdout
err_console = Console(stderr=True, soft_wrap=True)  # messages, progress, logs: stderr

# One table: which library error exits with which code.
EXIT_CODES: dict[type[DetError], int] = {
    ConfigError: 2,
    RegistryError: 2,
    PluginError: 2,
    DataError: 3,
    CheckpointError: 4,
    StorageError: 5,
    DetError: 1,
}

ConfigArg = Annotated[Path, typer.Argument(help="A config file (TOML) or a preset name, e.g. "
                                           "my.toml or retinanet_tiny_synth (det presets lists them).",
                                           show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", metavar="KEY=VALUE",
    help="Override a config value; VALUE is TOML (--set lr_config.step=[16,22]). Repeatable.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    help="cpu, cuda or cuda:N (default: cuda when available).")]

F = TypeVar("F", bound=Callable[..., Any])


def exit_code(exc: DetError) -> int:
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return 1


def report_error(exc: DetError) -> None:
    """One block on stderr: the message, each config issue on its own line, the hint."""
    lines = str(exc).splitlines() or [type(exc).__name__]
    err_console.print(f"[bold red]error:[/] {lines[0]}", highlight=False, markup=True)
    for line in lines[1:]:
        style = "yellow" if line.lstrip().startswith("hint:") else None
        err_console.print(line, style=style, highlight=False, markup=False)
    if exc.hint:
        err_console.print(f"hint: {exc.hint}", style="yellow", highlight=False, markup=False)
    err_console.print("(run with --debug for the traceback)", style="dim", highlight=False)


def guarded(fn: F) -> F:
    """Run a command; map library errors to a message and an exit code (``--debug``: raise)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = bool(kwargs.get("debug")) or os.environ.get("DET_DEBUG") == "1"
        setup_logging(debug)
        try:
            return fn(*args, **kwargs)
        except DetError as exc:
            if debug:
                raise
            report_error(exc)
            raise typer.Exit(exit_code(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def setup_logging(debug: bool = False) -> None:
    level = logging.DEBUG if debug else logging.INFO
    root = logging.getLogger("detcli")
    root.setLevel(level)
    if not any(isinstance(h, RichHandler) for h in root.handlers):
        handler = RichHandler(console=err_console, show_time=debug, show_path=debug, markup=False,
                              rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
        root.propagate = False


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour, no wrapping), for scripts."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def load(config: Path, overrides: Optional[list[str]]):
    """``detcli.load_config`` for a command's CONFIG argument and ``--set`` options."""
    from detcli.config.loader import load_config

    return load_config(config, overrides or [])
