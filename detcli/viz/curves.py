"""Training curves, drawn with matplotlib through :mod:`detcli.viz.figures`.

S points per series, R runs, K keys.

- :func:`plot_run`: one run's ``curves.png`` (written by ``det train`` in its work dir at each
  evaluation and at the end): a panel of every loss term and the total ``loss``, one of the
  learning rate, one of the gradient norm when the run logged it (``optimizer_config.grad_clip``),
  one of the validation metric (``evaluation.save_best``'s, with its ``_50`` and ``_75`` forms),
  each evaluation a marked point and the best one named in the legend;
- :func:`plot_comparison`: ``det analyze logs``' chart, one panel per key, one line per run
  (a legend per run, the work dirs' names), so the same metric of every run shares an axis.

Both take :class:`~detcli.analysis.train_logs.RunHistory` records and return the
:class:`~matplotlib.figure.Figure` they drew: what is shown can be read back from the axes
(``ax.lines``: x and y of each series). The x axis is epochs (iteration / iterations per epoch)
or iterations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from detcli.analysis.train_logs import RunHistory, Series
from detcli.viz.figures import colour, new_figure, save_figure

PANEL_WIDTH, PANEL_HEIGHT = 4.6, 3.0  # inches per panel
X_LABELS = {"epoch": "epoch", "iter": "iteration"}


@dataclass(frozen=True)
class Panel:
    """One axes of a chart: a title, its y label and the keys drawn on it."""

    title: str
    ylabel: str
    keys: tuple[str, ...]


def run_panels(history: RunHistory) -> list[Panel]:
    """The panels of one run's curves: losses, lr, grad norm (when logged), validation."""
    train = history.keys("train")
    panels = []
    if history.loss_keys():
        panels.append(Panel("losses", "loss", tuple(history.loss_keys())))
    if "lr" in train:
        panels.append(Panel("learning rate", "lr", ("lr",)))
    if "grad_norm" in train:
        panels.append(Panel("gradient norm (before clipping)", "grad_norm", ("grad_norm",)))
    if history.metric_keys():
        panels.append(Panel("validation", history.metric, tuple(history.metric_keys())))
    return panels


def plot_run(history: RunHistory, x: str | None = None) -> Figure:
    """``curves.png`` of one run (module docstring); ``x``: "epoch" or "iter" (default: epochs
    for an epoch-based run)."""
    unit = x or history.default_x()
    panels = run_panels(history) or [Panel("no records yet", "", ())]
    fig, axes = _grid(len(panels))
    for ax, panel in zip(axes, panels):
        for i, key in enumerate(panel.keys):
            series = history.series(key)
            _draw(ax, series, series.x(unit, history.iters_per_epoch), colour(i),
                  _label(series, history) if series.mode == "val" else key)
        _finish(ax, panel.title, panel.ylabel, unit, legend=len(panel.keys) > 1
                or panel.title == "validation")
        if panel.keys == ("lr",):
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    fig.suptitle(_run_title(history), fontsize=10)
    return fig


def plot_comparison(runs: Sequence[RunHistory], keys: Sequence[str], x: str) -> Figure:
    """``det analyze logs``' chart: panel k draws key k of every run (R lines, labelled with
    the runs' names); a run that did not log a key has no line there."""
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys):
        for r, run in enumerate(runs):
            series = run.series(key)
            if series.values:
                _draw(ax, series, series.x(x, run.iters_per_epoch), colour(r), run.name)
        _finish(ax, key, key, x, legend=True)
    return fig


def write_run_curves(history: RunHistory, path: Path) -> Path:
    """:func:`plot_run` as a PNG at ``path`` (atomic)."""
    return save_figure(plot_run(history), path, "the training curves")


def write_comparison(runs: Sequence[RunHistory], keys: Sequence[str], x: str,
                     path: Path) -> Path:
    """:func:`plot_comparison` as a PNG at ``path`` (atomic)."""
    return save_figure(plot_comparison(runs, keys, x), path, "the runs' curves")


def _grid(count: int) -> tuple[Figure, list[Axes]]:
    """Up to two panels side by side, then rows of two; unused cells hidden."""
    cols = 1 if count == 1 else 2
    rows = math.ceil(count / cols)
    fig, axes = new_figure(PANEL_WIDTH * cols, PANEL_HEIGHT * rows + 0.3, rows=rows, cols=cols,
                           squeeze=False)
    cells = list(axes.flat)
    for ax in cells[count:]:
        ax.set_visible(False)
    return fig, cells[:count]


def _draw(ax: Axes, series: Series, xs: Sequence[float], col: str, label: str) -> None:
    """Evaluations as marked points (few, each meaningful), train intervals as a line."""
    if series.mode == "val":
        ax.plot(xs, series.values, color=col, marker="o", markersize=4, linewidth=1.2,
                label=label)
    else:
        ax.plot(xs, series.values, color=col, linewidth=1.0, label=label)


def _label(series: Series, history: RunHistory) -> str:
    """An evaluation key's legend entry; the run's metric names its best value."""
    if series.key != history.metric:
        return series.key
    best = history.summary().best
    return f"{series.key} (best {best.value:.4f}, epoch {best.epoch})" if best else series.key


def _finish(ax: Axes, title: str, ylabel: str, unit: str, legend: bool) -> None:
    ax.set_title(title)
    ax.set_xlabel(X_LABELS[unit])
    ax.set_ylabel(ylabel)
    if legend and ax.lines:
        ax.legend(fontsize=7, loc="best", frameon=False)


def _run_title(history: RunHistory) -> str:
    summary = history.summary()
    done = (f"epoch {summary.epochs_done:.4g}" if history.default_x() == "epoch"
            and summary.epochs_done is not None else f"iteration {summary.iters_done}")
    return f"{history.name}: {done}"
