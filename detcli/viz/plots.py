"""The anchor report's charts (``det analyze anchors --out DIR``), drawn with matplotlib
through :mod:`detcli.viz.figures`.

T GT boxes, B histogram bins, M anchor shapes, L levels. Sizes are network-input pixels, as
everywhere in the report.

- :func:`plot_iou_histograms`: one panel per COCO size bucket, the best-IoU histogram of its
  GTs (one bar per bin of the report's ``histogram_edges``), with the assigner's
  ``pos_iou_thr`` and (a single) ``neg_iou_thr`` as dashed vertical lines; each panel's title
  gives its GT count and how many have no positive (red when some have none);
- :func:`plot_gt_shapes`: GT (w, h) on log2 axes, GTs with zero positives as red crosses,
  every anchor shape as an open square coloured by level, and the w = h diagonal.

Each takes its typed data (:class:`IoUHistograms`, :class:`GTShapes`, built from an anchor
report by their ``from_...`` constructors) and returns the :class:`~matplotlib.figure.Figure`
it drew, so what is shown can be read back from its axes (bar heights, line data, labels).
:func:`write_plots` writes both as PNGs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, NullLocator

from detcli.analysis.anchor_stats import HIST_BINS, SIZE_BUCKETS, AnchorSummary
from detcli.viz.figures import PALETTE, STYLE, colour, new_figure, save_figure

if TYPE_CHECKING:
    from detcli.analysis.anchor_analysis import AnchorReport

BAR = colour(0)
THRESHOLD_COLOURS = {"pos_iou_thr": colour(2), "neg_iou_thr": colour(1)}
GT_DOT = "#7f7f7f"
ZERO = colour(3)  # red: GTs without a positive
# Anchor levels: the palette without red (zero-positive GTs) and grey (GT dots).
LEVEL_COLOURS = tuple(c for c in PALETTE if c not in (ZERO, GT_DOT))
MIN_SIDE = 1e-3  # pixels: a degenerate box's side on the log axes


@dataclass(frozen=True)
class Threshold:
    """An assigner threshold drawn as a dashed line: its config name and value."""

    name: str  # "pos_iou_thr" or "neg_iou_thr"
    value: float

    @property
    def label(self) -> str:
        return f"{self.name} {self.value:g}"


@dataclass(frozen=True)
class SizeHistogram:
    """One size bucket's best-IoU histogram."""

    name: str  # "small", "medium", "large"
    counts: np.ndarray  # (B,) GTs per bin
    num_gt: int
    num_zero_positive: int

    @property
    def title(self) -> str:
        return f"{self.name}: {self.num_gt} GT, {self.num_zero_positive} with no positive"


@dataclass(frozen=True)
class IoUHistograms:
    """What :func:`plot_iou_histograms` draws: B bins over [0, 1], one histogram per size
    bucket, the thresholds to mark."""

    edges: np.ndarray  # (B + 1,)
    buckets: list[SizeHistogram]
    thresholds: list[Threshold]

    @classmethod
    def from_summary(cls, summary: AnchorSummary) -> IoUHistograms:
        """The report's histograms by size; ``neg_iou_thr`` only when the assigner's is one
        number (a (low, high) pair is not drawn)."""
        thresholds = []
        if summary.pos_iou_thr is not None:
            thresholds.append(Threshold("pos_iou_thr", float(summary.pos_iou_thr)))
        neg = summary.assigner.get("neg_iou_thr")
        if isinstance(neg, (int, float)) and not isinstance(neg, bool):
            thresholds.append(Threshold("neg_iou_thr", float(neg)))
        buckets = [SizeHistogram(name, np.asarray(g.best_iou_histogram, dtype=np.int64),
                                 g.num_gt, g.num_zero_positive)
                   for name, g in ((n, summary.by_size[n]) for n in SIZE_BUCKETS)]
        return cls(np.linspace(0.0, 1.0, HIST_BINS + 1), buckets, thresholds)


@dataclass(frozen=True)
class GTShapes:
    """What :func:`plot_gt_shapes` draws."""

    gt_wh: np.ndarray  # (T, 2) network-input pixels
    zero_positive: np.ndarray  # (T,) bool
    anchors: list[tuple[int, float, float]]  # M x (level, width, height)
    strides: list[list[int]]  # L x (s_w, s_h)

    @classmethod
    def from_report(cls, report: AnchorReport) -> GTShapes:
        return cls(np.asarray(report.gt_wh, dtype=np.float64).reshape(-1, 2),
                   np.asarray(report.zero_positive, dtype=bool), list(report.anchor_shapes),
                   [list(level.stride) for level in report.stats.by_level])


def level_colour(level: int) -> str:
    """The colour of FPN level ``level``'s anchors (cycling)."""
    return LEVEL_COLOURS[level % len(LEVEL_COLOURS)]


def stride_text(stride: Sequence[int]) -> str:
    """"8" for a square stride (8, 8), "8x16" otherwise."""
    return f"{stride[0]}" if stride[0] == stride[1] else f"{stride[0]}x{stride[1]}"


def _histogram_panel(ax: Axes, edges: np.ndarray, bucket: SizeHistogram,
                     thresholds: Sequence[Threshold]) -> None:
    """One bucket: B bars (zero-height ones too, so ``ax.patches`` is every bin), then the
    threshold lines."""
    ax.bar(edges[:-1], bucket.counts, width=np.diff(edges), align="edge", color=BAR,
           edgecolor="white", linewidth=0.5, label="GT boxes")
    for thr in thresholds:
        ax.axvline(thr.value, color=THRESHOLD_COLOURS[thr.name], linestyle="--", linewidth=1.4,
                   label=thr.label)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0, max(int(bucket.counts.max(initial=0)), 1) * 1.05)
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.set_xlabel("best IoU")
    ax.set_ylabel("GT boxes")
    ax.set_title(bucket.title, color=ZERO if bucket.num_zero_positive else "black",
                 fontsize=STYLE["title_size"])


def plot_iou_histograms(data: IoUHistograms, title: Optional[str] = None) -> Figure:
    """The best-IoU histogram of each size bucket, side by side; ``fig.axes`` holds one
    panel per bucket in ``data.buckets``' order, the thresholds in a figure legend."""
    fig, axes = new_figure(4.0 * len(data.buckets), 3.8, cols=len(data.buckets), squeeze=False)
    for ax, bucket in zip(axes[0], data.buckets):
        _histogram_panel(ax, data.edges, bucket, data.thresholds)
    fig.suptitle(title or "Best anchor IoU of each GT, by size (network-input pixels)",
                 fontsize=12)
    if data.thresholds:
        fig.legend(handles=axes[0, 0].get_lines(), loc="outside lower center",
                   ncols=len(data.thresholds), fontsize=9, frameon=False)
    return fig


def log2_bounds(values: np.ndarray) -> tuple[int, int]:
    """Powers of two (their log2, at least one apart) around the positive ``values``."""
    positive = values[values > 0]
    if positive.size == 0:
        return 0, 1
    lo = math.floor(math.log2(max(float(positive.min()), MIN_SIDE)))
    hi = math.ceil(math.log2(float(positive.max())))
    return lo, max(hi, lo + 1)


MAX_LOG_TICKS = 13  # beyond, ticks go to every second (third, ...) power of two


def _log2_axes(ax: Axes, lo: int, hi: int) -> None:
    """Both axes log2 from 2**lo to 2**hi, a tick labelled in pixels at each power of two
    (every k-th when there would be more than MAX_LOG_TICKS)."""
    step = math.ceil((hi - lo + 1) / MAX_LOG_TICKS)
    ticks = [2.0 ** k for k in range(lo, hi + 1, step)]
    for axis, set_scale, set_lim in ((ax.xaxis, ax.set_xscale, ax.set_xlim),
                                     (ax.yaxis, ax.set_yscale, ax.set_ylim)):
        set_scale("log", base=2)
        set_lim(2.0 ** lo, 2.0 ** hi)
        axis.set_ticks(ticks, [f"{t:g}" for t in ticks])
        axis.set_minor_locator(NullLocator())
    ax.set_box_aspect(1)


def plot_gt_shapes(data: GTShapes, title: Optional[str] = None) -> Figure:
    """GT widths and heights on log2 axes, anchors overlaid (see the module docstring). Its
    one axes holds a line per series, each labelled as in the legend: "GT (n)", "no
    positive (n)", one "anchors, stride s" per level, and "w = h"."""
    fig, ax = new_figure(7.2, 5.6)
    anchors = np.array([(w, h) for _, w, h in data.anchors], dtype=np.float64).reshape(-1, 2)
    lo, hi = log2_bounds(np.concatenate([data.gt_wh.reshape(-1), anchors.reshape(-1)]))
    _log2_axes(ax, lo, hi)
    ax.plot([2.0 ** lo, 2.0 ** hi], [2.0 ** lo, 2.0 ** hi], color="#bbbbbb", linewidth=0.8,
            label="w = h", zorder=1)
    wh = np.clip(data.gt_wh, MIN_SIDE, None)  # (T, 2)
    zero = data.zero_positive
    ax.plot(wh[~zero, 0], wh[~zero, 1], "o", color=GT_DOT, markersize=3, alpha=0.5,
            markeredgewidth=0, label=f"GT ({int((~zero).sum())})", zorder=2)
    ax.plot(wh[zero, 0], wh[zero, 1], "x", color=ZERO, markersize=7, markeredgewidth=1.6,
            label=f"no positive ({int(zero.sum())})", zorder=4)
    levels = np.array([level for level, _, _ in data.anchors], dtype=np.int64)  # (M,)
    for level, stride in enumerate(data.strides):
        mine = anchors[levels == level]  # (m, 2)
        ax.plot(mine[:, 0], mine[:, 1], "s", color=level_colour(level), markersize=8,
                markerfacecolor="none", markeredgewidth=1.6,
                label=f"anchors, stride {stride_text(stride)}", zorder=3)
    ax.set_xlabel("width (pixels)")
    ax.set_ylabel("height (pixels)")
    ax.set_title(title or "GT sizes and anchor shapes (network-input pixels, log scale)",
                 fontsize=STYLE["title_size"])
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return fig


def write_plots(report: AnchorReport, out_dir: Path, suffix: str = "") -> list[Path]:
    """Write ``best_iou{suffix}.png`` and ``gt_shapes{suffix}.png`` for an anchor report
    into ``out_dir``; a write failure raises StorageError naming the file."""
    histograms = plot_iou_histograms(IoUHistograms.from_summary(report.stats))
    shapes = plot_gt_shapes(GTShapes.from_report(report))
    return [save_figure(histograms, out_dir / f"best_iou{suffix}.png", "the best-IoU histograms"),
            save_figure(shapes, out_dir / f"gt_shapes{suffix}.png", "the GT shapes chart")]
