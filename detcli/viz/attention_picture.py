"""The pictures of ``det viz attention`` (OpenCV), one per query, from an
:class:`~detcli.analysis.attention.AttentionView`: an overview panel with every level's
sampling points, one panel per level, and a legend, laid out as :mod:`detcli.viz.canvas`
describes.

M heads, L levels, P points per head and level; s: the panel scale. Images are uint8 BGR.

What is drawn, over the image in grey: the query's predicted box at the recorded layer (white,
tagged with its class and score), its reference point (a white cross; each level's, which
differ only by the valid ratios of a padded image) and, for a decoder of reference boxes, the
reference box dashed; each sampling point a filled disc in its level's colour whose opacity
and area grow with its attention weight (the query's largest weight: radius
:data:`MAX_RADIUS`, opaque). A level panel draws that level's points only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np

from detcli.viz.canvas import (
    TEXT,
    LegendEntry,
    dashed_rectangle,
    distinct_colours,
    image_panel,
    panel_grid,
    point,
    put_text,
)
from detcli.viz.query_picture import wrapped

if TYPE_CHECKING:
    from detcli.analysis.attention import AttentionView, QueryAttention

MIN_RADIUS, MAX_RADIUS = 2, 7  # a sampling point's disc, least to largest weight (pixels)
MIN_ALPHA = 0.45  # the opacity of a weight near zero


def blend_disc(panel: np.ndarray, centre: tuple[int, int], radius: int,
               colour: tuple[int, int, int], alpha: float) -> None:
    """A filled disc blended into ``panel`` in place with opacity ``alpha``."""
    h, w = panel.shape[:2]
    x, y = centre
    x1, y1, x2, y2 = max(x - radius, 0), max(y - radius, 0), min(x + radius + 1, w), \
        min(y + radius + 1, h)
    if x1 >= x2 or y1 >= y2:
        return
    region = panel[y1:y2, x1:x2]
    mask = np.zeros(region.shape[:2], np.uint8)
    cv2.circle(mask, (x - x1, y - y1), radius, 255, -1, cv2.LINE_AA)
    weight = (mask.astype(np.float32) / 255.0 * alpha)[..., None]  # (h', w', 1)
    blended = region * (1 - weight) + np.asarray(colour, np.float32) * weight
    panel[y1:y2, x1:x2] = blended.astype(np.uint8)


def draw_points(panel: np.ndarray, query: QueryAttention, level: int, scale: float,
                colour: tuple[int, int, int], largest: float) -> None:
    """Level ``level``'s M x P points, the lightest first so the heaviest lie on top."""
    points = query.points[:, level].reshape(-1, 2) * scale  # (M * P, 2)
    weights = query.weights[:, level].reshape(-1)  # (M * P,)
    for k in np.argsort(weights, kind="stable"):
        share = float(weights[k]) / largest if largest > 0 else 0.0
        radius = round(MIN_RADIUS + (MAX_RADIUS - MIN_RADIUS) * math.sqrt(share))  # area ~ w
        blend_disc(panel, point(points[k]), radius, colour,
                   MIN_ALPHA + (1 - MIN_ALPHA) * share)


def draw_panel(view: AttentionView, query: QueryAttention, level: Optional[int], scale: float,
               colours: list[tuple[int, int, int]]) -> np.ndarray:
    """The overview (``level`` None: every level's points) or one level's panel."""
    panel = image_panel(view.image, view.img_shape, scale)
    largest = float(query.weights.max())
    levels = range(view.num_levels) if level is None else [level]
    shown = 0 if level is None else level  # whose reference is drawn
    if query.reference_box is not None:
        dashed_rectangle(panel, query.reference_box[shown] * scale, TEXT)
    for lv in levels:
        draw_points(panel, query, lv, scale, colours[lv], largest)
    cv2.drawMarker(panel, point(query.reference[shown] * scale), TEXT, cv2.MARKER_CROSS, 9, 1)
    if query.box is not None:
        box = np.asarray(query.box, np.float32) * scale
        cv2.rectangle(panel, point(box[:2]), point(box[2:]), TEXT, 1)
        put_text(panel, f"q{query.query} {query.class_name} {query.score:.2f}",
                 (box[0] + 2, max(box[1] - 3, 10)), TEXT)
    return panel


def legend_entries(view: AttentionView, query: QueryAttention) -> list[LegendEntry]:
    entries: list[LegendEntry] = []
    for lv in query.levels:
        h, w = lv.map_shape
        entries.append((f"L{lv.level} {w}x{h}: {lv.weight_mass:.2f}, {lv.mean_distance:.0f} px",
                        lv.level, TEXT))
    entries.append((f"q{query.query}'s box at layer {view.layer}", "rcnn_pos", TEXT))
    reference = "+ reference point" + (", box dashed" if query.reference_box is not None else "")
    entries.append((reference, None, TEXT))
    for text in (f"disc size and opacity: weight (largest {float(query.weights.max()):.3f}); "
                 "per level: weight share, mean distance", view.source_text):
        entries += [(line, None, TEXT) for line in wrapped(text)]
    return entries


def draw_query_attention(view: AttentionView, query: QueryAttention) -> np.ndarray:
    """One query's picture: the overview, a panel per level and the legend -> (height,
    width, 3) uint8 BGR."""
    colours = distinct_colours(view.num_levels)
    panels = [(f"q{query.query}, decoder layer {view.layer}: all levels",
               lambda s: draw_panel(view, query, None, s, colours))]
    for lv in query.levels:
        panels.append((f"level {lv.level} ({lv.map_shape[1]}x{lv.map_shape[0]}): "
                       f"{lv.weight_mass:.2f}",
                       lambda s, level=lv.level: draw_panel(view, query, level, s, colours)))
    return panel_grid(view.pad_shape, panels, legend_entries(view, query), colours)
