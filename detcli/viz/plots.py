"""PNG plots of an anchor report, drawn with OpenCV and numpy (no matplotlib).

T GT boxes, B histogram bins, M anchor shapes. Images are (H, W, 3) uint8 BGR, ready for
``cv2.imwrite``. Sizes are network-input pixels, as everywhere in the report.

- :func:`plot_iou_histograms`: one panel per COCO size bucket, the best-IoU histogram of its
  GTs, with the assigner's thresholds as dashed lines;
- :func:`plot_gt_shapes`: GT (w, h) on log2 axes, GTs with zero positives as red crosses, and
  every anchor shape as a square marker coloured by level.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2
import numpy as np

from detcli.errors import DetError

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE, BLACK, GREY, LIGHT = (255, 255, 255), (30, 30, 30), (120, 120, 120), (225, 225, 225)
BAR, GT_DOT, ZERO = (200, 130, 40), (170, 120, 60), (40, 40, 220)
POS_LINE, NEG_LINE = (40, 160, 40), (40, 100, 230)
LEVEL_COLOURS = [(180, 80, 20), (30, 150, 230), (60, 170, 60), (160, 60, 160), (20, 40, 180),
                 (130, 130, 20), (90, 90, 90)]  # BGR, one per level, cycled
MARGIN = (70, 40, 30, 60)  # left, top, right, bottom of each plot area


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45,
          colour: tuple[int, int, int] = BLACK, align: str = "left", thickness: int = 1) -> None:
    """Text with its baseline at ``org``; ``align`` "left", "centre" or "right" of org's x."""
    (width, _), _ = cv2.getTextSize(text, FONT, scale, thickness)
    x = org[0] - {"left": 0, "centre": width // 2, "right": width}[align]
    cv2.putText(img, text, (int(x), int(org[1])), FONT, scale, colour, thickness, cv2.LINE_AA)


def _dashed_vline(img: np.ndarray, x: int, top: int, bottom: int, colour: tuple[int, int, int]) -> None:
    for y in range(top, bottom, 8):
        cv2.line(img, (x, y), (x, min(y + 4, bottom)), colour, 2, cv2.LINE_AA)


def nice_ticks(upper: float, most: int = 6) -> list[float]:
    """0 and multiples of a 1/2/5 x 10^k step up to at least ``upper``, at most ``most`` + 1."""
    upper = max(upper, 1.0)
    raw = upper / most
    base = 10 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    return [i * step for i in range(int(math.ceil(upper / step)) + 1)]


class _Panel:
    """A plot area at (x0, y0) of size (w, h) with linear data ranges."""

    def __init__(self, x0: int, y0: int, w: int, h: int, xr: tuple[float, float],
                 yr: tuple[float, float]) -> None:
        self.x0, self.y0, self.w, self.h, self.xr, self.yr = x0, y0, w, h, xr, yr

    def px(self, x: np.ndarray | float) -> np.ndarray:
        share = (np.asarray(x, dtype=np.float64) - self.xr[0]) / (self.xr[1] - self.xr[0])
        return self.x0 + share * self.w

    def py(self, y: np.ndarray | float) -> np.ndarray:
        share = (np.asarray(y, dtype=np.float64) - self.yr[0]) / (self.yr[1] - self.yr[0])
        return self.y0 + self.h - share * self.h  # y grows downwards in the image

    def axes(self, img: np.ndarray, xticks: Sequence[tuple[float, str]],
             yticks: Sequence[tuple[float, str]], xlabel: str, ylabel: str, grid: bool = True) -> None:
        left, top, right, bottom = self.x0, self.y0, self.x0 + self.w, self.y0 + self.h
        for value, label in xticks:
            x = int(round(float(self.px(value))))
            if grid:
                cv2.line(img, (x, top), (x, bottom), LIGHT, 1)
            cv2.line(img, (x, bottom), (x, bottom + 5), BLACK, 1)
            _text(img, label, (x, bottom + 20), align="centre")
        for value, label in yticks:
            y = int(round(float(self.py(value))))
            if grid:
                cv2.line(img, (left, y), (right, y), LIGHT, 1)
            cv2.line(img, (left - 5, y), (left, y), BLACK, 1)
            _text(img, label, (left - 8, y + 5), align="right")
        cv2.rectangle(img, (left, top), (right, bottom), BLACK, 1)
        _text(img, xlabel, ((left + right) // 2, bottom + 42), align="centre")
        _vertical_text(img, ylabel, (left - 52, (top + bottom) // 2))


def _vertical_text(img: np.ndarray, text: str, centre: tuple[int, int]) -> None:
    """Text rotated 90 degrees (bottom to top), centred on ``centre``."""
    (width, height), base = cv2.getTextSize(text, FONT, 0.45, 1)
    patch = np.full((height + base + 4, width + 4, 3), 255, np.uint8)
    _text(patch, text, (2, height + 2))
    patch = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)  # (w + 4, h + base + 4, 3)
    y = max(centre[1] - patch.shape[0] // 2, 0)
    x = max(centre[0] - patch.shape[1] // 2, 0)
    region = img[y:y + patch.shape[0], x:x + patch.shape[1]]
    np.minimum(region, patch[:region.shape[0], :region.shape[1]], out=region)


def plot_iou_histograms(summary: dict[str, Any], title: Optional[str] = None) -> np.ndarray:
    """The best-IoU histogram of each size bucket, side by side."""
    panel_w, panel_h = 330, 260
    left, top, right, bottom = MARGIN
    img = np.full((top + panel_h + bottom + 30, 3 * (left + panel_w + right), 3), 255, np.uint8)
    _text(img, title or "Best anchor IoU of each GT, by size (network-input pixels)", (12, 24), 0.55)
    edges = np.asarray(summary["histogram_edges"])  # (B + 1,)
    thresholds = [(summary.get("pos_iou_thr"), POS_LINE, "pos", "left")]
    neg = summary.get("assigner", {}).get("neg_iou_thr")
    if isinstance(neg, (int, float)):
        thresholds.append((float(neg), NEG_LINE, "neg", "right"))
    for i, name in enumerate(("small", "medium", "large")):
        group = summary["by_size"][name]
        counts = np.asarray(group["best_iou_histogram"], dtype=np.float64)  # (B,)
        yticks = nice_ticks(counts.max(initial=0))
        panel = _Panel(i * (left + panel_w + right) + left, top + 20, panel_w, panel_h,
                       (0.0, 1.0), (0.0, yticks[-1]))
        panel.axes(img, [(v, f"{v:.1f}") for v in np.linspace(0, 1, 6)],
                   [(v, f"{v:g}") for v in yticks], "best IoU", "GT boxes", grid=True)
        for lo, hi, count in zip(edges[:-1], edges[1:], counts):
            if count > 0:
                cv2.rectangle(img, (int(panel.px(lo)) + 1, int(panel.py(count))),
                              (int(panel.px(hi)) - 1, int(panel.py(0))), BAR, -1)
        for value, colour, label, align in thresholds:
            if value is not None:
                x = int(panel.px(value))
                _dashed_vline(img, x, panel.y0, panel.y0 + panel.h, colour)
                _text(img, f"{label} {value:g}", (x + (4 if align == "left" else -4), panel.y0 + 14),
                      0.4, colour, align=align)
        zero = group["num_zero_positive"]
        _text(img, f"{name}: {group['num_gt']} GT, {zero} with no positive", (panel.x0, panel.y0 - 8),
              0.45, ZERO if zero else BLACK)
    return img


def _log_range(values: np.ndarray) -> tuple[float, float]:
    """Power-of-two bounds (log2) around positive ``values``."""
    logs = np.log2(np.clip(values, 1e-3, None))
    return float(math.floor(logs.min())), float(math.ceil(logs.max()))


def _stamp(img: np.ndarray, xs: np.ndarray, ys: np.ndarray, offsets: np.ndarray,
           colour: tuple[int, int, int]) -> None:
    """Set the pixels at (xs, ys) (n,) plus each of ``offsets`` (k, 2) to ``colour``."""
    px = (np.round(xs)[:, None] + offsets[None, :, 0]).astype(np.int64).ravel()  # (n*k,)
    py = (np.round(ys)[:, None] + offsets[None, :, 1]).astype(np.int64).ravel()  # (n*k,)
    inside = (px >= 0) & (px < img.shape[1]) & (py >= 0) & (py < img.shape[0])
    img[py[inside], px[inside]] = colour


DOT = np.array([(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)])  # (9, 2)
CROSS = np.array([(d, d) for d in range(-4, 5)] + [(d, -d) for d in range(-4, 5)]
                 + [(d + 1, d) for d in range(-4, 4)] + [(d + 1, -d) for d in range(-4, 4)])


def plot_gt_shapes(gt_wh: np.ndarray, zero_positive: np.ndarray,
                   anchor_shapes: Sequence[tuple[int, float, float]], strides: Sequence[Any],
                   title: Optional[str] = None) -> np.ndarray:
    """GT widths and heights (T, 2) on log2 axes, anchors overlaid (see the module docstring)."""
    size = 560
    left, top, right, bottom = MARGIN
    img = np.full((top + size + bottom + 30, left + size + right + 170, 3), 255, np.uint8)
    _text(img, title or "GT sizes and anchor shapes (network-input pixels, log scale)", (12, 24), 0.55)
    anchors = np.array([(w, h) for _, w, h in anchor_shapes], dtype=np.float64).reshape(-1, 2)  # (M, 2)
    values = np.concatenate([gt_wh.reshape(-1), anchors.reshape(-1)])
    lo, hi = _log_range(values[values > 0] if (values > 0).any() else np.ones(1))
    hi = max(hi, lo + 1)
    panel = _Panel(left, top + 20, size, size, (lo, hi), (lo, hi))
    ticks = [(float(v), f"{2 ** v:g}") for v in np.arange(lo, hi + 1)]
    panel.axes(img, ticks, ticks, "width (pixels)", "height (pixels)")
    cv2.line(img, (int(panel.px(lo)), int(panel.py(lo))), (int(panel.px(hi)), int(panel.py(hi))),
             LIGHT, 1, cv2.LINE_AA)  # ratio 1
    logs = np.log2(np.clip(gt_wh, 1e-3, None))  # (T, 2)
    zero = np.asarray(zero_positive, dtype=bool)
    _stamp(img, panel.px(logs[~zero, 0]), panel.py(logs[~zero, 1]), DOT, GT_DOT)
    _stamp(img, panel.px(logs[zero, 0]), panel.py(logs[zero, 1]), CROSS, ZERO)
    for level, w, h in anchor_shapes:
        colour = LEVEL_COLOURS[level % len(LEVEL_COLOURS)]
        x, y = int(panel.px(math.log2(w))), int(panel.py(math.log2(h)))
        cv2.rectangle(img, (x - 5, y - 5), (x + 5, y + 5), colour, 2, cv2.LINE_AA)
    legend_x, legend_y = panel.x0 + panel.w + 20, panel.y0 + 10
    entries = [(f"GT ({int((~zero).sum())})", GT_DOT, "dot"),
               (f"no positive ({int(zero.sum())})", ZERO, "cross")]
    entries += [(f"anchors, stride {_stride(s)}", LEVEL_COLOURS[i % len(LEVEL_COLOURS)], "square")
                for i, s in enumerate(strides)]
    for i, (label, colour, kind) in enumerate(entries):
        y = legend_y + 22 * i
        if kind == "square":
            cv2.rectangle(img, (legend_x, y - 5), (legend_x + 10, y + 5), colour, 2)
        else:
            marker = DOT if kind == "dot" else CROSS
            _stamp(img, np.array([legend_x + 5.0]), np.array([float(y)]), marker, colour)
        _text(img, label, (legend_x + 18, y + 5), 0.42)
    return img


def _stride(stride: Any) -> str:
    pair = list(stride) if isinstance(stride, (list, tuple)) else [stride, stride]
    return f"{pair[0]}" if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def write_plots(report: Any, out_dir: Path, suffix: str = "") -> list[Path]:
    """Write ``best_iou{suffix}.png`` and ``gt_shapes{suffix}.png`` for an AnchorReport."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = report.summary
    strides = summary["anchors"].get("strides") or [e["stride"] for e in summary["by_level"]]
    images = {
        f"best_iou{suffix}.png": plot_iou_histograms(summary),
        f"gt_shapes{suffix}.png": plot_gt_shapes(report.gt_wh, report.zero_positive,
                                                 report.anchor_shapes, strides),
    }
    written = []
    for name, img in images.items():
        path = out_dir / name
        if not cv2.imwrite(str(path), img):
            raise DetError(f"could not write {path}")
        written.append(path)
    return written
