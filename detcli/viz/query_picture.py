"""The matching picture of ``det viz assign`` on a query-based detector (OpenCV), from a
:class:`~detcli.analysis.query_matching.QueryMatching`: an overview panel, with ``layers`` one
panel per decoder layer, and a legend, laid out as :mod:`detcli.viz.canvas` describes.

Q queries, G GT boxes, L layers; s: the panel scale. Images are uint8 BGR.

What is drawn, over the image in grey: every query's box of the last layer thin and dark grey
(the unmatched ones are background in the loss); each GT thick in its colour, its matched
query's box dashed in the same colour with a line between the two centres and a tag
``q<query> <total cost>``; a GT left without a query (more GT than queries) gets a red tag.
Extra query groups (``QueryMatching.groups``, a caller's) are drawn as small dots at their
centres in the colour of their GT; DINO's denoising queries get a panel of their own, second
(:mod:`detcli.viz.denoising_picture`). A layer panel shows where the final match's
query was at that layer (its box dashed, the GT thick) and, when that layer's own matching
gave the GT another query, that query's box thin. The legend names the match costs and their
weights and says where the queries come from (a checkpoint, or the seeded stand-in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np

from detcli.viz.canvas import (
    ENTRY_W,
    FONT,
    FONT_SCALE,
    TEXT,
    WARN,
    LegendEntry,
    centres,
    dashed_rectangle,
    distinct_colours,
    draw_dots,
    image_panel,
    panel_grid,
    point,
    put_text,
)

from detcli.viz.denoising_picture import denoising_legend, draw_denoising_panel, panel_title

if TYPE_CHECKING:
    from detcli.analysis.query_matching import QueryMatching

QUERY_GREY = (90, 90, 90)  # the legend's "unsampled" swatch
LEGEND_TEXT_W = ENTRY_W - 6  # the text room of a legend entry without a swatch


def _scaled(box, scale: float) -> np.ndarray:
    return np.asarray(box, np.float32) * scale


def draw_panel(matching: QueryMatching, layer: Optional[int], scale: float,
               colours: list[tuple[int, int, int]]) -> np.ndarray:
    """The overview (``layer`` None) or one decoder layer's panel."""
    panel = image_panel(matching.image, matching.img_shape, scale)
    if layer is None:
        for box in matching.query_boxes * scale:  # (Q, 4)
            cv2.rectangle(panel, point(box[:2]), point(box[2:]), QUERY_GREY, 1)
        for group in matching.groups:
            for g, colour in enumerate(colours):
                draw_dots(panel, centres(group.boxes[group.gt_index == g] * scale), colour)
    for gt, colour in zip(matching.gts, colours):
        box = _scaled(gt.box, scale)
        cv2.rectangle(panel, point(box[:2]), point(box[2:]), colour, 2)
        if gt.query is None:
            put_text(panel, f"#{gt.index} no query", (box[0] + 2, box[1] + 12), TEXT, WARN)
            continue
        if layer is None:
            query_box, tag = _scaled(gt.query_box, scale), f"q{gt.query} {gt.total:.2f}"
        else:
            step = gt.layers[layer]
            query_box, tag = _scaled(step.box, scale), f"q{gt.query} IoU {step.iou:.2f}"
            if step.layer_box is not None and step.layer_query != gt.query:
                other = _scaled(step.layer_box, scale)
                cv2.rectangle(panel, point(other[:2]), point(other[2:]), colour, 1)
        dashed_rectangle(panel, query_box, colour)
        (gx, gy), (qx, qy) = centres(box[None])[0], centres(query_box[None])[0]
        cv2.line(panel, point((gx, gy)), point((qx, qy)), colour, 1, cv2.LINE_AA)
        put_text(panel, tag, (query_box[0] + 2, max(query_box[1] - 3, 10)), colour)
    return panel


def wrapped(text: str, width: int = LEGEND_TEXT_W) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` pixels wide (a word wider than
    that gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        line = f"{lines[-1]} {word}" if lines else word
        if lines and cv2.getTextSize(line, FONT, FONT_SCALE, 1)[0][0] <= width:
            lines[-1] = line
        else:
            lines.append(word)
    return lines


def legend_entries(matching: QueryMatching) -> list[LegendEntry]:
    entries: list[LegendEntry] = []
    for g, gt in enumerate(matching.gts):
        text = f"#{gt.index} {gt.class_name}: " + ("no query (more GT than queries)"
                                                     if gt.query is None else f"q{gt.query}")
        entries.append((text, g, WARN if gt.query is None else TEXT))
    entries.append(("GT; its query dashed", "gt", TEXT))
    entries.append((f"{matching.num_queries} queries, last layer", "unsampled", TEXT))
    costs = " + ".join(f"{name} x{weight:g}" for name, weight in matching.costs)
    for text in (f"{matching.assigner} cost: {costs}", matching.source_text):
        entries += [(line, None, TEXT) for line in wrapped(text)]
    if matching.denoising is not None and matching.denoising.queries:
        entries += [(line, None, TEXT) for text in denoising_legend(matching.denoising)
                    for line in wrapped(text)]
    return entries


def draw_query_matching(matching: QueryMatching, layers: bool = False,
                        dn_groups: int = 2) -> np.ndarray:
    """The matching picture: an overview panel, with ``layers`` one panel per decoder layer,
    for DINO a panel of the first ``dn_groups`` denoising groups
    (:mod:`detcli.viz.denoising_picture`), and the legend -> (height, width, 3) uint8 BGR."""
    panels: list[Optional[int]] = [None]
    if layers and matching.num_layers > 1:
        panels += list(range(matching.num_layers))
    colours = distinct_colours(len(matching.gts))
    drawn = [("Hungarian matching (last layer)" if layer is None else f"decoder layer {layer}",
              lambda scale, layer=layer: draw_panel(matching, layer, scale, colours))
             for layer in panels]
    view = matching.denoising
    if view is not None and view.queries:
        drawn.insert(1, (panel_title(view, dn_groups), lambda scale: draw_denoising_panel(
            matching, view, dn_groups, scale, colours)))
    return panel_grid(matching.pad_shape, drawn, legend_entries(matching), colours)
