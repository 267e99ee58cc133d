"""The confusion matrix and the TIDE error breakdown as pictures (``det test --plots``),
drawn with matplotlib through :mod:`detcli.viz.figures`.

K classes; the matrix is (K+1, K+1) with background last on both axes.

- :func:`confusion_figure`: the matrix as a heat map, GT class on y (rows), predicted class on
  x (columns), both with "background" last; each cell that holds a count shows it (the count,
  or with ``normalised`` its share of the row, two decimals); empty cells stay blank. With more
  than :data:`MAX_ANNOTATED` rows the cells carry colour only (the numbers are in ``--json``).
- :func:`error_figure`: left, one horizontal bar per error type (TIDE's order, top to bottom)
  whose length is its dAP50, labelled with the value, the type and its count on the y axis;
  right, a per-class table (rows classes, columns types) of dAP50, "-" for a class without
  GT, at most :data:`MAX_TABLE_CLASSES` rows (those with the largest total dAP50, named so in
  the title).

Each returns its :class:`~matplotlib.figure.Figure`, so what is drawn can be read back
(``ax.texts``, ``ax.patches``, tick labels); ``write_*`` save them as PNGs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from detcli.evaluation.confusion import ConfusionMatrix
from detcli.evaluation.errors import ErrorBreakdown
from detcli.viz.figures import STYLE, colour, new_figure, save_figure

MAX_ANNOTATED = 30  # rows (K + 1) up to which the matrix's cells carry their numbers
MAX_TABLE_CLASSES = 30  # classes in the per-class dAP table
CELL_INCHES = 0.42
CMAP = "Blues"
MISSING = "#d9d9d9"  # a class without GT in the per-class table


def _text_colour(value: float, top: float) -> str:
    """White on the dark end of the colour map, black elsewhere."""
    return "white" if top > 0 and value > 0.6 * top else "black"


def confusion_figure(cm: ConfusionMatrix, *, normalised: bool = False) -> Figure:
    """The confusion matrix ``cm`` as counts or row-normalised (module docstring)."""
    n = len(cm.labels)  # K + 1
    side = max(4.0, CELL_INCHES * n + 2.4)
    fig, ax = new_figure(side + 1.6, side + 0.4)
    ax.grid(False)
    values = cm.normalised() if normalised else cm.counts.astype(float)  # (K+1, K+1)
    top = float(values.max()) if values.size else 0.0
    image = ax.imshow(values, cmap=CMAP, vmin=0.0, vmax=1.0 if normalised else max(top, 1.0))
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row" if normalised else "count")
    if n <= MAX_ANNOTATED:
        size = STYLE["tick_size"] if n <= 12 else 6
        for (row, col), count in np.ndenumerate(cm.counts):
            if count == 0:
                continue
            value = values[row, col]
            ax.text(col, row, f"{value:.2f}" if normalised else f"{int(count)}", ha="center",
                    va="center", fontsize=size, color=_text_colour(value, 1.0 if normalised
                                                                   else top))
    ax.set_xticks(range(n), cm.labels, rotation=45 if n > 6 else 0,
                  ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), cm.labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("ground-truth class")
    what = "row-normalised" if normalised else "counts"
    ax.set_title(f"confusion matrix ({what})\nmatched at IoU >= {cm.iou_thr:.2f}, "
                 f"detections scoring >= {cm.score_thr:.2f}")
    return fig


def write_confusion_matrix(cm: ConfusionMatrix, path: str | Path, *,
                           normalised: bool = False) -> Path:
    """Draw :func:`confusion_figure` and write it as a PNG at ``path``."""
    what = "the row-normalised confusion matrix" if normalised else "the confusion matrix"
    return save_figure(confusion_figure(cm, normalised=normalised), path, what)


def _draw_bars(ax: Axes, eb: ErrorBreakdown) -> None:
    """One bar per type, top to bottom in TIDE's order, its dAP50 written at its end."""
    deltas = [impact.delta_ap for impact in eb.impacts]
    rows = np.arange(len(deltas))
    ax.barh(rows, deltas, color=[colour(i) for i in rows], height=0.6)
    reach = max(max(deltas, default=0.0), 1e-3)
    for row, delta in zip(rows, deltas):
        ax.text(delta + 0.02 * reach, row, f"{delta:.3f}", va="center",
                fontsize=STYLE["tick_size"])
    ax.set_yticks(rows, [f"{i.type.short} ({i.count})" for i in eb.impacts])
    ax.invert_yaxis()
    ax.set_xlim(0.0, reach * 1.25)
    ax.set_xlabel("dAP50: AP50 gained if fixed")
    ax.set_title(f"AP50 {eb.ap50:.3f}: error types (count)")


def table_classes(eb: ErrorBreakdown) -> np.ndarray:
    """Labels shown in the per-class table: all, or the :data:`MAX_TABLE_CLASSES` with the
    largest total dAP50 (in label order)."""
    K = len(eb.class_names)
    if K <= MAX_TABLE_CLASSES:
        return np.arange(K)
    total = np.nansum(np.stack([i.delta_ap_per_class for i in eb.impacts]), axis=0)  # (K,)
    return np.sort(np.argsort(-total, kind="mergesort")[:MAX_TABLE_CLASSES])


def _draw_table(ax: Axes, eb: ErrorBreakdown) -> None:
    """Classes x types of per-class dAP50, the value in each cell, "-" without GT."""
    shown = table_classes(eb)
    table = np.stack([i.delta_ap_per_class[shown] for i in eb.impacts], axis=1)  # (S, 6)
    top = float(np.nanmax(table)) if np.isfinite(table).any() else 0.0
    ax.grid(False)
    ax.set_facecolor(MISSING)
    ax.imshow(np.ma.masked_invalid(table), cmap=CMAP, vmin=0.0, vmax=max(top, 1e-3),
              aspect="auto")
    size = STYLE["tick_size"] if len(shown) <= 12 else 6
    for (row, col), value in np.ndenumerate(table):
        text = "-" if np.isnan(value) else f"{value:.3f}"
        ax.text(col, row, text, ha="center", va="center", fontsize=size,
                color="black" if np.isnan(value) else _text_colour(value, top))
    ax.set_xticks(range(len(eb.impacts)), [i.type.short for i in eb.impacts])
    ax.set_yticks(range(len(shown)), [eb.class_names[k] for k in shown])
    ax.tick_params(axis="x", top=True, labeltop=True, bottom=False, labelbottom=False)
    more = "" if len(shown) == len(eb.class_names) else \
        f" ({len(shown)} of {len(eb.class_names)} classes: largest total)"
    ax.set_title(f"dAP50 per class{more}")


def error_figure(eb: ErrorBreakdown) -> Figure:
    """The error breakdown ``eb``: dAP50 per type, and per class (module docstring)."""
    rows = len(table_classes(eb))
    fig, (bars, table) = new_figure(11.0, max(3.6, 0.3 * rows + 1.6), cols=2,
                                    gridspec_kw={"width_ratios": [1.0, 1.2]})
    _draw_bars(bars, eb)
    _draw_table(table, eb)
    fig.suptitle(f"where the AP goes (TIDE: foreground IoU {eb.fg_iou:g}, background IoU "
                 f"{eb.bg_iou:g})", fontsize=STYLE["title_size"])
    return fig


def write_error_breakdown(eb: ErrorBreakdown, path: str | Path) -> Path:
    """Draw :func:`error_figure` and write it as a PNG at ``path``."""
    return save_figure(error_figure(eb), path, "the error breakdown")
