"""What every command shares: option aliases, the output sink, the error table, and help text.

Library errors (``detcli.errors``) become one readable block on stderr and an exit code from
``EXIT_CODES``; with ``--debug`` (or ``DET_DEBUG=1``) the traceback is shown instead.
Only this package prints; the library logs and raises.

Every command is registered with ``cls=DetCommand`` (groups with ``cls=DetGroup``) and an
``epilog=examples(...)``: its help then reads as a person would write it --
``det train [OPTIONS] CONFIG``, ``--batch-size N [at least 1]``, ``--amp bf16|fp16``, no type
after a flag -- and ends with an "Examples" block.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from detcli.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DetError,
    PluginError,
    RegistryError,
    StorageError,
)
from detcli.text import plural

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
# a str, not a Path: Path("mmdet://NAME") would fold the "//"
CheckpointArg = Annotated[str, typer.Argument(
    metavar="CHECKPOINT", help="A checkpoint file (.pth, det's or MMDetection's) or mmdet://NAME "
    "(det zoo lists them; downloaded into torch's hub cache the first time).",
    show_default=False)]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", "-s", metavar="KEY=VALUE",
    help="Override a config value; VALUE is TOML (--set lr_config.step=[16,22]). Repeatable.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON to stdout.")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    metavar="DEVICE", help="cpu, cuda or cuda:N (default: cuda when available).")]

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


# ---- help text ----------------------------------------------------------------------------

# Typer's context settings for every command and group: -h is --help.
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def examples(*lines: str) -> str:
    """The epilog of a command's help: ``Examples:`` and one command per line, escaped so
    ``[...]`` in an example is not read as rich markup."""
    return "Examples:\n" + "\n".join(escape(line) for line in lines)


def shown_default(text: str) -> str:
    """``[default: TEXT]`` for a help string whose option has no literal default (None means
    "derived"); escaped so rich markup leaves the brackets alone."""
    return escape(f"[default: {text}]")


def _number_range(low: Any, high: Any) -> str | None:
    if low is None and high is None:
        return None
    if high is None:
        return f"at least {low}"
    if low is None:
        return f"at most {high}"
    return f"{low} to {high}"


class _NamedArgument(TyperArgument):
    """An argument shown by its name alone (``CONFIG``, ``INPUT...``), without a type."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Any) -> list[str]:
        name = self.display_name_raw
        return [name if self.required else f"[{name}]"]


class _PlainOption(TyperOption):
    """An option whose value range reads ``at least 1`` rather than ``x>=1``."""

    def _get_number_range_help_str(self) -> str | None:
        if self.count and self.min == 0 and self.max is None:
            return None
        return _number_range(self.min, self.max)


def _option_metavar(param: TyperOption) -> str:
    """What a person writes after the option: nothing for a flag, the choices, or a word."""
    if param.is_flag:
        return ""
    desc = param.type_descriptor
    if desc.is_choice:
        return "|".join(str(getattr(c, "value", c)) for c in desc.choices or ())
    if desc.is_path:
        return "PATH"
    annotation = desc.annotation
    if desc.is_list:
        (annotation,) = getattr(annotation, "__args__", (str,))
    return {int: "N", float: "NUMBER"}.get(annotation, "TEXT")


def reflow(text: str) -> str:
    """A docstring as paragraphs of one line each (rich keeps single line breaks)."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


def _readable(params: list[Any]) -> None:
    for param in params:
        if isinstance(param, TyperArgument):
            param.__class__ = _NamedArgument
            if param.metavar is None:
                param.metavar = (param.name or "value").upper() + ("..." if param.nargs != 1
                                                                   else "")
        elif isinstance(param, TyperOption):
            param.__class__ = _PlainOption
            if param.metavar is None:
                param.metavar = _option_metavar(param)


class _HandWrittenHelp:
    """Help as written by hand (module docstring): typer builds the parameters; this names each
    argument in capitals, gives each option a metavar from its type (a flag none), states
    ranges in words, reflows the docstring's paragraphs, and makes -h mean --help."""

    help: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["context_settings"] = {**CONTEXT_SETTINGS, **(kwargs.get("context_settings") or {})}
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = reflow(self.help)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # with --help (and a group's completion options)
        _readable(params)
        return params


class DetCommand(_HandWrittenHelp, TyperCommand):
    """A command with hand-written-looking help (``@app.command(cls=DetCommand, ...)``)."""


class DetGroup(_HandWrittenHelp, TyperGroup):
    """A command group with the same help conventions (``typer.Typer(cls=DetGroup, ...)``)."""
