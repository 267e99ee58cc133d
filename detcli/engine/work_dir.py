"""The work directory of a run: where it is, the resolved config, and the text log.

Layout (rank 0 writes it)::

    work_dirs/<config stem>/       the default; --work-dir chooses another
      config.toml                  the resolved config, each value with its origin
      train.log                    every log line of the run (appended across resumes)
      metrics.jsonl                one JSON record per log interval and per evaluation
      epoch_N.pth / iter_N.pth     periodic checkpoints; latest.pth names the newest
      best_<metric>.pth            the best evaluation so far
      nan_iter_N.pth               the weights when a loss went NaN or infinite
"""

from __future__ import annotations

import logging
from pathlib import Path

from detcli.config.emit import to_toml
from detcli.config.loader import LoadedConfig, display_path

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


def write_config(work_dir: Path, loaded: LoadedConfig) -> Path:
    path = work_dir / "config.toml"
    path.write_text(resolved_config_text(loaded), encoding="utf-8")
    return path


def attach_log_file(work_dir: Path, level: str = "INFO") -> logging.Handler:
    """Send the ``detcli`` loggers to ``work_dir/train.log``; detach with :func:`detach_log_file`."""
    handler = logging.FileHandler(work_dir / "train.log", encoding="utf-8")
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
    handler.close()
