"""Charts through matplotlib: one house style, no display, atomic PNG writes.

Every chart in ``det`` (analysis plots, evaluation curves, training curves) is a matplotlib
figure made by :func:`new_figure` and written by :func:`save_figure`. matplotlib runs on its
``Agg`` backend (files only, no display, no GUI toolkit) through its object API
(:class:`~matplotlib.figure.Figure` directly, never ``pyplot``), so making a chart changes no
global state and works in threads, tests and headless servers alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from detcli.errors import writing

DPI = 110
STYLE: dict[str, Any] = {  # applied to every figure's axes
    "title_size": 11,
    "label_size": 9,
    "tick_size": 8,
    "grid_alpha": 0.3,
}
# Colours for series in order (matplotlib's tab10, spelled out so a chart never depends on
# a user's matplotlibrc).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def colour(i: int) -> str:
    """The i-th series colour (cycling)."""
    return PALETTE[i % len(PALETTE)]


def new_figure(width: float = 6.4, height: float = 4.4, *, rows: int = 1, cols: int = 1,
               squeeze: bool = True, **subplot_kw: Any) -> tuple[Figure, Any]:
    """A figure (inches at :data:`DPI`) and its axes (one, or a ``rows`` x ``cols`` array),
    in the house style: light grid, small ticks, constrained layout."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=squeeze, **subplot_kw)
    for ax in (axes.flat if hasattr(axes, "flat") else [axes]):
        style_axes(ax)
    return fig, axes


def style_axes(ax: Any) -> None:
    """Grid, tick and label sizes of the house style."""
    ax.grid(True, alpha=STYLE["grid_alpha"], linewidth=0.6)
    ax.tick_params(labelsize=STYLE["tick_size"])
    ax.xaxis.label.set_size(STYLE["label_size"])
    ax.yaxis.label.set_size(STYLE["label_size"])
    ax.title.set_size(STYLE["title_size"])


def save_figure(fig: Figure, path: str | Path, what: str = "the chart") -> Path:
    """Write ``fig`` as a PNG at ``path`` (folders made; written to a temporary name first and
    renamed, so a failed write leaves no half-written file); a storage problem raises
    :class:`~detcli.errors.StorageError` naming ``what`` and the path."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, what):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fig.savefig(tmp, format="png", dpi=DPI)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path
