"""Exceptions the library raises on purpose: bad input, misuse and OS faults, never bugs.

The CLI maps each class to an exit code and a message in one table (``EXIT_CODES`` in
``detcli/cli/common.py``); everything else is a bug and keeps its traceback.

An error raised in a DataLoader worker reaches the main process as torch rebuilds it:
``DataError("Caught DataError in DataLoader worker process 0.\nOriginal Traceback ...")``.
:class:`DetError` recognises that text and keeps only the original message and hint (the
worker's traceback becomes a note, shown with ``--debug``), so an error reads the same
whichever process raised it. An ``OSError`` met while writing becomes a :class:`StorageError`
through :func:`writing`, naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

HINT_NOTE = "hint: "  # the note that carries a hint through a worker's traceback text
_WORKER = re.compile(r"^Caught (?P<name>\w+) in DataLoader worker process (?P<worker>\d+)\.\n"
                     r"Original (?P<traceback>Traceback .*)\Z", re.DOTALL)


def _from_worker(cls: type, text: str) -> tuple[str, str | None, str] | None:
    """(message, hint, worker traceback) of torch's re-raise text for an error of class
    ``cls`` raised in a loader worker; None when ``text`` is not that."""
    match = _WORKER.match(text)
    if match is None or match["name"] != cls.__name__:
        return None
    tb = match["traceback"]
    head = f"{cls.__module__}.{cls.__qualname__}"
    start = tb.rfind(f"\n{head}: ")  # the last exception of the chain is the one raised
    if start < 0:
        return None
    lines = tb[start + len(head) + 3:].rstrip("\n").split("\n")
    hint = None
    if len(lines) > 1 and lines[-1].startswith(HINT_NOTE):  # the note DetError adds
        hint = lines.pop()[len(HINT_NOTE):]
    return "\n".join(lines), hint, f"in DataLoader worker process {match['worker']}: {tb}"


class DetError(Exception):
    """Base class. ``hint`` is a one-line suggestion shown under the message."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        worker = _from_worker(type(self), message) if isinstance(message, str) else None
        if worker is not None:
            message, worker_hint, worker_tb = worker
            hint = hint or worker_hint
        super().__init__(message)
        self.hint = hint
        if hasattr(self, "add_note"):  # Python 3.11+: tracebacks (and workers' texts) show them
            if worker is not None:
                self.add_note(worker_tb.rstrip("\n"))
            if hint:
                self.add_note(HINT_NOTE + hint)


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


class StorageError(DetError):
    """A file or folder det must write cannot be written: no permission, a read-only or full
    file system, a path under a regular file. Names the path and the cause."""


_STORAGE_HINTS = {
    errno.ENOSPC: "free space on that file system, or write somewhere else",
    errno.EDQUOT: "your disk quota is used up: free space, or write somewhere else",
    errno.EROFS: "that file system is mounted read-only: write somewhere else",
    errno.EACCES: "you lack write permission there: change the permissions, or write somewhere else",
    errno.EPERM: "you lack write permission there: change the permissions, or write somewhere else",
    errno.EISDIR: "a folder stands where the file should be: remove or rename it",
}


def _blocking_file(path: Path) -> Path | None:
    """The regular file that stands where a folder of (or at) ``path`` should be, if any."""
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
    return None


def storage_error(exc: OSError, path: str | Path, what: str, after: str = "") -> StorageError:
    """The StorageError of ``exc``, met writing ``what`` (e.g. "checkpoint") at ``path``;
    ``after`` is added to the message (what was kept)."""
    path = Path(path)
    cause = exc.strerror or str(exc)
    hint = _STORAGE_HINTS.get(exc.errno or 0)
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and (blocker := _blocking_file(path)):
        cause = f"{blocker} is a file, not a folder"
        hint = "move that file away, or choose another path"
    return StorageError(f"cannot write {what} {path}: {cause}{after}", hint=hint)


def _os_error(exc: BaseException) -> OSError | None:
    """``exc`` or the OSError behind it (torch.save wraps a failed write in a RuntimeError)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


@contextlib.contextmanager
def writing(path: str | Path, what: str, after: str = "") -> Iterator[None]:
    """Turn an OSError raised inside (also one wrapped by torch) into a StorageError naming
    ``what`` and ``path`` (see :func:`storage_error`)."""
    try:
        yield
    except StorageError:
        raise
    except (OSError, RuntimeError) as exc:
        os_error = _os_error(exc)
        if os_error is None:
            raise
        raise storage_error(os_error, path, what, after) from exc
