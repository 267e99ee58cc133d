"""Exceptions the library raises on purpose: bad input and misuse, never bugs.

The CLI maps each class to an exit code and a message in one table (``detcli/cli/errors.py``);
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class DetError(Exception):
    """Base class. ``hint`` is a one-line suggestion shown under the message."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class RegistryError(DetError):
    """An unknown or duplicate component name."""


class PluginError(DetError):
    """A ``detcli.plugins`` entry point that failed to import."""


@dataclass
class ConfigIssue:
    """One problem in a config: the dotted key path, what is wrong, and who set the value."""

    path: str
    message: str
    value: object = None
    origin: str | None = None  # "file.toml:12", "--set", "default"
    hint: str | None = None


class ConfigError(DetError):
    """A config that cannot be loaded or does not validate; carries every issue found."""

    def __init__(self, message: str, issues: list[ConfigIssue] | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.issues = issues or []

    def __str__(self) -> str:
        lines = [self.args[0]]
        for issue in self.issues:
            where = f" (set in {issue.origin})" if issue.origin else ""
            lines.append(f"  {issue.path}: {issue.message}{where}")
            if issue.hint:
                lines.append(f"    hint: {issue.hint}")
        return "\n".join(lines)


class DataError(DetError):
    """A dataset, annotation file or image that cannot be used; names the file."""


class CheckpointError(DetError):
    """A checkpoint that is missing, corrupt or does not fit the model."""


class TrainingError(DetError):
    """Training cannot go on: a non-finite loss, a run that cannot be resumed or extended."""


class ExportError(DetError):
    """A model that cannot be exported, an export setting out of range, a missing export
    dependency, or an exported model that disagrees with PyTorch."""
