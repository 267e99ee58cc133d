"""The CLI explains itself: `det` alone, --version, -h, shell completion, and every command's
help read as a person would write it (no typer type names, defaults shown, an Examples block)."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
import typer.main
from typer.testing import CliRunner

from detcli.cli.main import app

# what typer prints when a parameter has no hand-written metavar
RAW_FORMS = re.compile(r"\bTEXT\b|<(bool|path|int|float|str|text|file|directory)>|<[a-z]+ range>|"
                       r"<list\[|\bx\s*[<>]=|\{[a-z_]+\}|<[a-z0-9_]+\|[a-z0-9_|]+>")


def run(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "100"})


def command_paths() -> list[tuple[str, ...]]:
    """Every leaf command, as the words that call it (("train",), ("viz", "assign"), ...)."""
    found = []

    def walk(command, path):
        children = getattr(command, "commands", None)
        if not children:
            found.append(path)
            return
        for name, child in children.items():
            walk(child, (*path, name))

    walk(typer.main.get_command(app), ())
    return found


def test_every_command_is_walked():
    paths = command_paths()
    for expected in [("train",), ("test",), ("predict",), ("viz", "assign"), ("export", "onnx"),
                     ("config", "show"), ("data", "check"), ("analyze", "anchors")]:
        assert expected in paths


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_help_reads_as_written_by_hand_and_ends_with_examples(path):
    result = run(*path, "--help")
    assert result.exit_code == 0, result.output
    text = result.output
    assert not RAW_FORMS.findall(text), f"raw metavars in `det {' '.join(path)} --help`"
    assert f"Usage: det {' '.join(path)} [OPTIONS]" in text
    assert "Examples:" in text
    examples = text[text.index("Examples:"):]
    assert f"det {' '.join(path)}" in examples  # the examples call this command
    assert run(*path, "-h").output == text  # -h is --help


@pytest.mark.parametrize("group", [(), ("viz",), ("config",)])
def test_groups_take_h_too(group):
    result = run(*group, "-h")
    assert result.exit_code == 0 and "Commands" in result.output
    assert not RAW_FORMS.findall(result.output)


def test_usage_lines_name_the_arguments():
    assert re.search(r"Usage: det train \[OPTIONS\] CONFIG *\n", run("train", "-h").output)
    assert re.search(r"Usage: det predict \[OPTIONS\] CONFIG\|CHECKPOINT \[CHECKPOINT\] INPUT\.\.\. *\n",
                     run("predict", "-h").output)
    assert re.search(r"Usage: det config diff \[OPTIONS\] A B *\n",
                     run("config", "diff", "-h").output)


def test_metavars_and_ranges_in_words():
    text = run("train", "-h").output
    assert re.search(r"--gpus\s+N \[at least 1\]", text)
    assert re.search(r"--amp\s+bf16\|fp16", text)
    assert re.search(r"--json\s+Print", text)  # a flag: no value after it
    assert re.search(r"--score-thr\s+NUMBER \[0.0 to 1.0\]", run("predict", "-h").output)


def test_viz_assign_shows_its_defaults():
    from detcli.analysis.proposals import BACKGROUND, JITTER_PER_GT

    text = " ".join(run("viz", "assign", "-h").output.replace("│", " ").split())  # unwrapped
    assert f"[default: {JITTER_PER_GT}]" in text and f"[default: {BACKGROUND}]" in text
    assert "[default: all]" in text and "[default: <image stem>_assign.png]" in text
    assert "[default: 0]" in text  # --seed, typer's own


def test_det_alone_prints_the_quick_start():
    result = run()
    assert result.exit_code == 0
    for line in ["det init DATA_DIR", "det train CONFIG", "det predict CONFIG CHECKPOINT"]:
        assert line in result.output
    assert "Usage:" not in result.output  # not the usage error


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.strip() == f"det {version('detcli')}"


def test_shell_completion_is_offered():
    assert "--install-completion" in run("--help").output
    result = run("--show-completion", "bash")
    assert result.exit_code == 0
    assert "_det_completion" in result.output and "complete " in result.output


def test_counts_in_messages_agree_with_their_number():
    from detcli.cli.common import plural

    assert [plural(n, "epoch") for n in (0, 1, 2)] == ["0 epochs", "1 epoch", "2 epochs"]
    assert plural(1, "GT box", "GT boxes") == "1 GT box" and plural(3, "box", "boxes") == "3 boxes"
