"""The work directory of a run: where it is, the resolved config, and the text log.

Layout (rank 0 writes it)::

    work_dirs/<config stem>/       the default; --work-dir chooses another
      config.toml                  the resolved config, each value with its origin
      train.log                    every log line of the run (appended across resumes)
      metrics.jsonl                one JSON record per log interval and per evaluation
      epoch_N.pth / iter_N.pth     periodic checkpoints; latest.pth names the newest
      best_<metric>.pth            the best evaluation so far
      nan_iter_N.pth               the weights when a loss went NaN or infinite

Every write here raises :class:`~detcli.errors.StorageError` (naming the path and the cause)
when the file system refuses it: a work dir under a regular file, no permission, a read-only
or full file system. A ``train.log`` line that cannot be written raises it from the logging
call, rather than logging's own traceback on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from detcli.config.emit import to_toml
from detcli.config.loader import LoadedConfig, display_path
from detcli.errors import storage_error, writing

WORK_DIRS = Path("work_dirs")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_work_dir(config_path: str | Path) -> Path:
    """``work_dirs/<config stem>`` (MMDetection's default)."""
    return WORK_DIRS / Path(config_path).stem


def resolved_config_text(loaded: LoadedConfig) -> str:
    """The resolved config as TOML with ``# origin`` comments (what ``config.toml`` holds)."""
    chain = " <- ".join(display_path(f) for f in reversed(loaded.files))
    header = f"resolved from {chain}" + "".join(f"\n--set {o}" for o in loaded.overrides)
    return to_toml(loaded.resolved(), loaded.origins, header=header)


def make_work_dir(work_dir: Path) -> Path:
    """Create ``work_dir`` (and its parents) unless it exists."""
    with writing(work_dir, "to the work directory"):
        work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def write_config(work_dir: Path, loaded: LoadedConfig) -> Path:
    path = work_dir / "config.toml"
    with writing(path, "the resolved config"):
        path.write_text(resolved_config_text(loaded), encoding="utf-8")
    return path


class _LogFile(logging.FileHandler):
    """``train.log``: a line the file system refuses raises StorageError (module docstring)."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            raise storage_error(exc, self.baseFilename, "the training log") from exc
        super().handleError(record)


def attach_log_file(work_dir: Path, level: str = "INFO") -> logging.Handler:
    """Send the ``detcli`` loggers to ``work_dir/train.log``; detach with :func:`detach_log_file`."""
    path = work_dir / "train.log"
    with writing(path, "the training log"):
        handler = _LogFile(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.setLevel(level)
    root = logging.getLogger("detcli")
    handler.previous_level = root.level  # type: ignore[attr-defined]
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > handler.level:
        root.setLevel(handler.level)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    root = logging.getLogger("detcli")
    root.removeHandler(handler)
    root.setLevel(getattr(handler, "previous_level", root.level))
    with contextlib.suppress(OSError):  # a full disk: the error that stopped the run says so
        handler.close()
