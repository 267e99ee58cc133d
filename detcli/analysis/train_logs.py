"""A training run's history, read back from its ``metrics.jsonl``, and runs compared.

P records in a run, S points in one series. ``det train`` appends one JSON line to
``<work_dir>/metrics.jsonl`` per ``log_config.interval`` iterations (``mode = "train"``:
epoch, iter, lr, each loss, ``loss``, ``grad_norm`` when clipping, time, ...) and one per
evaluation (``mode = "val"``: the metrics). :func:`read_run` turns that file into a
:class:`RunHistory` (typed records and the series drawn from them); the training curves
(``curves.png``, drawn by :mod:`detcli.viz.curves`) and ``det analyze logs`` both read it.
:func:`compare_runs` makes the table of ``det analyze logs``: per run the best and final value
of the metric that picks the best checkpoint (``evaluation.save_best``), the epochs and
iterations done and the training time.

The metric and its rule come from the run's ``config.toml`` (written beside ``metrics.jsonl``):
``evaluation.save_best``, whose ``auto`` is the first metric's headline key (``bbox_mAP``,
``voc_mAP``: ``PRIMARY_KEYS``); without one, ``bbox_mAP``, greater is better.

A crash while a line was written leaves it cut short: a last line that does not parse is
dropped with a warning; any other bad line is a :class:`~detcli.errors.DataError` naming the
file and line.
"""

from __future__ import annotations

import json
import logging
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from detcli.errors import ConfigError, DataError
from detcli.evaluation.config import PRIMARY_KEYS
from detcli.text import is_loss_key

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.toml"
AUTO_METRIC = PRIMARY_KEYS["bbox"]  # save_best = "auto" with the default metric: bbox_mAP
# Where a record was logged, not a measured value: never a series.
POSITION_KEYS = frozenset({"mode", "epoch", "iter", "inner_iter", "iters_per_epoch",
                           "max_iters"})
X_UNITS = ("epoch", "iter")


@dataclass(frozen=True)
class LogRecord:
    """One line of ``metrics.jsonl``: where it was logged and its numeric values."""

    mode: str  # "train" (a log interval) or "val" (an evaluation)
    iter: int  # iterations done when it was logged
    epoch: int  # as logged: train, the epoch it is in (1-based); val, the epochs done
    values: Mapping[str, float]  # every numeric field but the position ones
    iters_per_epoch: int | None = None  # train records say it
    max_iters: int | None = None  # the run's planned iterations (train records)


@dataclass(frozen=True)
class Series:
    """One key's values over a run: (S,) iterations and (S,) values, in log order."""

    key: str
    mode: str  # "train" or "val": which records it comes from
    iters: tuple[int, ...]
    values: tuple[float, ...]

    def x(self, unit: str, iters_per_epoch: int | None) -> tuple[float, ...]:
        """(S,) positions in ``unit``: iterations, or epochs (``iter / iters_per_epoch``, so
        a train record inside epoch 3 sits between 2 and 3 and an evaluation after it at 3)."""
        if unit == "iter" or not iters_per_epoch:
            return tuple(float(i) for i in self.iters)
        return tuple(i / iters_per_epoch for i in self.iters)


@dataclass(frozen=True)
class MetricPoint:
    """A value of the run's metric and the evaluation that gave it."""

    value: float
    epoch: int
    iter: int

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch, "iter": self.iter}


@dataclass(frozen=True)
class RunSummary:
    """A row of ``det analyze logs``' table (its ``--json``: :meth:`to_dict`)."""

    name: str  # the legend's name for the run (its work dir's name)
    path: str  # the metrics.jsonl read
    metric: str  # the metric that picks the best checkpoint
    greater: bool  # whether larger values of it are better
    best: MetricPoint | None  # None: no evaluation logged it
    final: MetricPoint | None
    evaluations: int
    iters_done: int
    max_iters: int | None  # as the last train record says; None without train records
    iters_per_epoch: int | None
    train_seconds: float  # sum over train records of time (s/iter) x the iterations it covers
    last_loss: float | None
    dropped_last_line: bool  # the last line was cut short (a crash mid-write)

    @property
    def epochs_done(self) -> float | None:
        return self.iters_done / self.iters_per_epoch if self.iters_per_epoch else None

    @property
    def max_epochs(self) -> float | None:
        if not self.iters_per_epoch or self.max_iters is None:
            return None
        return self.max_iters / self.iters_per_epoch

    @property
    def seconds_per_iter(self) -> float | None:
        return self.train_seconds / self.iters_done if self.iters_done else None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "metric": self.metric,
                "rule": "greater" if self.greater else "less",
                "best": self.best.to_dict() if self.best else None,
                "final": self.final.to_dict() if self.final else None,
                "evaluations": self.evaluations, "epochs_done": self.epochs_done,
                "max_epochs": self.max_epochs, "iters_done": self.iters_done,
                "max_iters": self.max_iters, "iters_per_epoch": self.iters_per_epoch,
                "train_seconds": self.train_seconds, "seconds_per_iter": self.seconds_per_iter,
                "last_loss": self.last_loss, "dropped_last_line": self.dropped_last_line}


@dataclass(frozen=True)
class RunHistory:
    """Every record of one run (P), with the metric its best checkpoint is chosen by."""

    name: str
    path: Path  # the metrics.jsonl read
    records: tuple[LogRecord, ...]
    metric: str = AUTO_METRIC
    greater: bool = True
    by_epoch: bool = True  # EpochBasedRunner (else IterBasedRunner): the default x axis
    dropped_last_line: bool = False

    def of_mode(self, mode: str) -> list[LogRecord]:
        return [r for r in self.records if r.mode == mode]

    def keys(self, mode: str) -> list[str]:
        """The value keys of ``mode``'s records, in the order they first appear."""
        seen: dict[str, None] = {}
        for record in self.of_mode(mode):
            seen.update(dict.fromkeys(record.values))
        return list(seen)

    def loss_keys(self) -> list[str]:
        """``loss_*`` terms, then the total ``loss`` (what the loss panel draws)."""
        keys = [k for k in self.keys("train") if is_loss_key(k)]
        return [k for k in keys if k != "loss"] + (["loss"] if "loss" in keys else [])

    def metric_keys(self) -> list[str]:
        """The evaluation keys the curves draw: the metric and its ``_50`` / ``_75`` forms
        when logged; when the metric itself is not, every evaluation key."""
        keys = self.keys("val")
        if self.metric not in keys:
            return keys
        return [k for k in (self.metric, f"{self.metric}_50", f"{self.metric}_75") if k in keys]

    @property
    def iters_per_epoch(self) -> int | None:
        return next((r.iters_per_epoch for r in reversed(self.records)
                     if r.iters_per_epoch), None)

    @property
    def max_iters(self) -> int | None:
        return next((r.max_iters for r in reversed(self.records) if r.max_iters), None)

    def default_x(self) -> str:
        return "epoch" if self.by_epoch and self.iters_per_epoch else "iter"

    def series(self, key: str) -> Series:
        """``key``'s values: from the train records when they hold it, else the evaluations;
        records without it are skipped. Unknown keys give an empty series."""
        mode = "train" if key in self.keys("train") else "val"
        points = [(r.iter, r.values[key]) for r in self.of_mode(mode) if key in r.values]
        return Series(key=key, mode=mode, iters=tuple(i for i, _ in points),
                      values=tuple(v for _, v in points))

    def summary(self) -> RunSummary:
        evals = [MetricPoint(r.values[self.metric], r.epoch, r.iter)
                 for r in self.of_mode("val") if self.metric in r.values]
        finite = [p for p in evals if math.isfinite(p.value)]
        best = None
        if finite:
            pick = max if self.greater else min
            best = pick(finite, key=lambda p: p.value)  # the first of equal values
        train = self.of_mode("train")
        seconds, previous = 0.0, 0
        for record in train:  # each record's time is the mean over the iterations since the last
            if "time" in record.values:
                seconds += record.values["time"] * max(record.iter - previous, 0)
            previous = record.iter
        losses = [r.values["loss"] for r in train if "loss" in r.values]
        return RunSummary(
            name=self.name, path=str(self.path), metric=self.metric, greater=self.greater,
            best=best, final=evals[-1] if evals else None, evaluations=len(evals),
            iters_done=max((r.iter for r in self.records), default=0),
            max_iters=self.max_iters, iters_per_epoch=self.iters_per_epoch,
            train_seconds=seconds, last_loss=losses[-1] if losses else None,
            dropped_last_line=self.dropped_last_line)


@dataclass(frozen=True)
class LogComparison:
    """``det analyze logs``: the runs' summaries and the keys drawn, one panel each."""

    runs: tuple[RunSummary, ...]
    keys: tuple[str, ...]
    x: str  # "epoch" or "iter"

    def to_dict(self) -> dict[str, Any]:
        return {"runs": [r.to_dict() for r in self.runs], "keys": list(self.keys), "x": self.x}


def metrics_path(path: Path) -> Path:
    """The ``metrics.jsonl`` of a work dir (or the file itself); a :class:`DataError` naming
    the folder and the file expected when there is none."""
    path = Path(path)
    if path.is_dir():
        found = path / METRICS_FILE
        if not found.is_file():
            raise DataError(f"{path} holds no {METRICS_FILE}, the log det train writes in its "
                            f"work dir", hint=f"pass a det train work dir (the folder of its "
                                              f"checkpoints) or a {METRICS_FILE}")
        return found
    if not path.exists():
        raise DataError(f"{path} does not exist",
                        hint=f"pass a det train work dir or its {METRICS_FILE}")
    return path


def read_records(path: Path) -> tuple[list[LogRecord], bool]:
    """The records of a ``metrics.jsonl`` (P) and whether its last line was cut short (and
    dropped, with a warning). Lines of another mode are skipped; blank lines too."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records, dropped = [], False
    for index, (number, line) in enumerate(lines):
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            if index == len(lines) - 1:
                log.warning("%s: line %d is cut short (the run stopped while writing it); "
                            "read the %d lines before it", path, number, len(lines) - 1)
                dropped = True
                break
            raise DataError(f"{path}, line {number}: not a JSON record ({exc.msg}, column "
                            f"{exc.colno})", hint=f"{METRICS_FILE} holds one JSON object a "
                            "line, as det train writes it") from exc
        record = _record(raw, path, number)
        if record is not None:
            records.append(record)
    return records, dropped


def _record(raw: Any, path: Path, number: int) -> LogRecord | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("iter"), int) \
            or not isinstance(raw.get("mode"), str):
        raise DataError(f"{path}, line {number}: not a det train record (an object with "
                        f"'mode' and an integer 'iter')")
    if raw["mode"] not in ("train", "val"):
        return None
    values = {k: float(v) for k, v in raw.items() if k not in POSITION_KEYS and _numeric(v)}
    return LogRecord(mode=raw["mode"], iter=raw["iter"], epoch=_int(raw.get("epoch")) or 0,
                     values=values, iters_per_epoch=_int(raw.get("iters_per_epoch")),
                     max_iters=_int(raw.get("max_iters")))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class RunSettings:
    """What the run's config says about reading its log."""

    metric: str = AUTO_METRIC
    greater: bool = True
    by_epoch: bool = True


def run_settings(config_path: Path) -> RunSettings:
    """``evaluation.save_best`` / ``rule`` and ``runner.type`` of a work dir's
    ``config.toml``; the defaults (``bbox_mAP``, greater, epoch-based) without one."""
    if not config_path.is_file():
        return RunSettings()
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.warning("%s cannot be read (%s): taking %s, greater is better", config_path, exc,
                    AUTO_METRIC)
        return RunSettings()
    evaluation = data.get("evaluation") or {}
    save_best = evaluation.get("save_best", "auto")
    metric = save_best if isinstance(save_best, str) and save_best != "auto" \
        else _primary_key(evaluation.get("metric", "bbox"))
    rule = evaluation.get("rule")
    greater = rule == "greater" if isinstance(rule, str) else "loss" not in metric
    runner = (data.get("runner") or {}).get("type", "EpochBasedRunner")
    return RunSettings(metric=metric, greater=greater, by_epoch=runner != "IterBasedRunner")


def _primary_key(metric: Any) -> str:
    first = metric[0] if isinstance(metric, list) and metric else metric
    return PRIMARY_KEYS.get(first, AUTO_METRIC) if isinstance(first, str) else AUTO_METRIC


def read_run(path: Path, *, name: str | None = None,
             settings: RunSettings | None = None) -> RunHistory:
    """The history of the run in work dir (or ``metrics.jsonl``) ``path``; ``settings``
    default to its ``config.toml``'s."""
    file = metrics_path(path)
    records, dropped = read_records(file)
    settings = settings or run_settings(file.parent / CONFIG_FILE)
    return RunHistory(name=name or run_name(file), path=file, records=tuple(records),
                      metric=settings.metric, greater=settings.greater,
                      by_epoch=settings.by_epoch, dropped_last_line=dropped)


def run_name(file: Path) -> str:
    """A run's name: its work dir's (the folder of ``metrics.jsonl``), else the file's stem."""
    return file.parent.name if file.name == METRICS_FILE else file.stem


def read_runs(paths: Sequence[Path]) -> list[RunHistory]:
    """:func:`read_run` of each path; runs whose folders share a name are told apart by as
    many parent folders as it takes (``x/retinanet``, ``y/retinanet``)."""
    files = [metrics_path(p) for p in paths]
    short = [run_name(f) for f in files]
    names = [_distinct_name(f, files) if short.count(n) > 1 else n
             for f, n in zip(files, short)]
    return [read_run(f, name=n) for f, n in zip(files, names)]


def _run_folder_parts(file: Path) -> tuple[str, ...]:
    folder = file.parent if file.name == METRICS_FILE else file.with_suffix("")
    return folder.resolve().parts


def _distinct_name(file: Path, files: Sequence[Path]) -> str:
    parts = _run_folder_parts(file)
    others = [_run_folder_parts(f) for f in files if f.resolve() != file.resolve()]
    for depth in range(2, len(parts) + 1):
        if all(o[-depth:] != parts[-depth:] for o in others):
            return "/".join(parts[-depth:])
    return "/".join(parts)


def compare_runs(runs: Sequence[RunHistory], keys: Sequence[str] = (),
                 x: str | None = None) -> LogComparison:
    """The table and the chart's keys of ``det analyze logs``. ``keys`` default to ``loss``
    and the first run's metric (those logged); a key no run logged is a
    :class:`ConfigError` listing the keys there are. ``x``: "epoch" or "iter" (default: the
    first run's, epochs for an epoch-based run)."""
    if not runs:
        raise ConfigError("no run to compare", hint="pass one or more det train work dirs")
    known = {k for run in runs for mode in ("train", "val") for k in run.keys(mode)}
    if not keys:
        keys = [k for k in ("loss", runs[0].metric) if k in known]
    unknown = [k for k in keys if k not in known]
    if unknown:
        train = sorted({k for run in runs for k in run.keys("train")})
        val = sorted({k for run in runs for k in run.keys("val")})
        raise ConfigError(
            f"--keys {', '.join(unknown)}: not logged by {_runs_text(runs)}; the train records "
            f"hold {', '.join(train) or '(none)'}; the evaluations {', '.join(val) or '(none)'}")
    if x is not None and x not in X_UNITS:
        raise ConfigError(f"x axis {x!r}: use one of {', '.join(X_UNITS)}")
    unit = x or runs[0].default_x()
    for key in keys:
        missing = [run.name for run in runs if not run.series(key).values]
        if missing:
            log.warning("%s: not logged by %s (no line drawn for it)", key, ", ".join(missing))
    return LogComparison(runs=tuple(r.summary() for r in runs), keys=tuple(keys), x=unit)


def _runs_text(runs: Sequence[RunHistory]) -> str:
    return runs[0].name if len(runs) == 1 else f"any of the {len(runs)} runs"
