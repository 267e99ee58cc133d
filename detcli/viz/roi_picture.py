"""The RoI sampling picture of ``det viz assign`` for a two-stage detector (OpenCV), from a
:class:`~detcli.analysis.roi_sampling.RoISamplingView`: the layout of
:mod:`detcli.viz.canvas` with two panels.

R' candidates, G GT boxes; s: the panel scale. Images are uint8 BGR.

The first panel shows the sampled positives, thin in the colour of their GT, the second the
sampled negatives, thin in red; GT boxes thick in both; on request the candidates left out of
the sample faintly (positives in their GT's colour in the first panel, the others grey in the
second). A GT that no proposal matches (only its own box, added as a proposal, is positive)
gets a yellow legend entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from detcli.viz.canvas import (
    BACKGROUND,
    GAP,
    GREY,
    LOW,
    LegendEntry,
    RCNN_NEG,
    TEXT,
    TITLE_H,
    assignment_canvas_size,
    distinct_colours,
    draw_legend,
    fit_text,
    image_panel,
    panel_scale,
    point,
    put_text,
)

if TYPE_CHECKING:
    from detcli.analysis.roi_sampling import RoISamplingView

FAINT_ALPHA = 0.35  # opacity of the candidates left out of the RoI sample


def _faint_boxes(panel: np.ndarray, boxes: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> None:
    """(B, 4) boxes, 1 pixel, each in its colour, blended at FAINT_ALPHA; in place."""
    if len(boxes) == 0:
        return
    layer = panel.copy()
    for box, colour in zip(boxes, colours):
        cv2.rectangle(layer, point(box[:2]), point(box[2:]), colour, 1)
    cv2.addWeighted(layer, FAINT_ALPHA, panel, 1 - FAINT_ALPHA, 0, dst=panel)


def _gt_tags(panel: np.ndarray, gt_boxes: np.ndarray, colours: list[tuple[int, int, int]]) -> None:
    for g, box in enumerate(gt_boxes):
        cv2.rectangle(panel, point(box[:2]), point(box[2:]), colours[g], 2)
        put_text(panel, f"#{g}", (box[0] + 1, max(box[1] - 3, 10)), (0, 0, 0),
                 background=colours[g])


def draw_rcnn_panel(view: RoISamplingView, positives: bool, scale: float,
                    colours: list[tuple[int, int, int]], show_unsampled: bool) -> np.ndarray:
    """One RoI panel (no title): the sampled positives (``positives``) or negatives."""
    panel = image_panel(view.image, view.img_shape, scale)
    boxes = view.candidates * scale  # (R', 4)
    matched = view.gt_index >= 0  # (R',)
    left_out = view.not_sampled & (matched if positives else ~matched)  # (R',)
    if show_unsampled:
        faint = [colours[g] for g in view.gt_index[left_out]] if positives else \
            [GREY] * int(left_out.sum())
        _faint_boxes(panel, boxes[left_out], faint)
    if positives:
        chosen = view.sampled_pos & ~view.gt_flags  # (R',) the GT boxes are drawn thick anyway
        for box, g in zip(boxes[chosen], view.gt_index[chosen]):
            cv2.rectangle(panel, point(box[:2]), point(box[2:]), colours[g], 1)
    else:
        for box in boxes[view.sampled_neg]:
            cv2.rectangle(panel, point(box[:2]), point(box[2:]), RCNN_NEG, 1)
    _gt_tags(panel, view.gt_boxes * scale, colours)
    return panel


def rcnn_panel_title(view: RoISamplingView, positives: bool) -> str:
    c = view.counts
    if positives:
        limit = "" if view.max_pos is None else f" (at most {view.max_pos})"
        return f"sampled positives: {c['sampled_positive']} of {c['assigned_positive']}{limit}"
    return f"sampled negatives: {c['sampled_negative']} of {c['assigned_negative']}"


def rcnn_legend_entries(view: RoISamplingView, show_unsampled: bool) -> list[LegendEntry]:
    """(text, marker, text colour) of the RoI picture: "gt", "rcnn_pos", "rcnn_neg", "unsampled",
    None (text), or a GT's index, yellow when no proposal matches it."""
    entries: list[LegendEntry] = [("GT box", "gt", TEXT), ("sampled positive", "rcnn_pos", TEXT),
                                  ("sampled negative", "rcnn_neg", TEXT)]
    if show_unsampled:
        entries.append(("not sampled (faint)", "unsampled", TEXT))
    c = view.counts
    source = "jittered GT" if view.source == "jitter" else "RPN"
    entries.append((f"{c['proposals']} {source} proposals + {c['gt_added']} GT", None, TEXT))
    entries.append((f"{c['not_sampled']} of {c['candidates']} not sampled", None, TEXT))
    for g, gt in enumerate(view.gts):
        colour = LOW if gt.num_proposals == 0 else TEXT
        entries.append((f"#{g} {gt.class_name[:10]}: {gt.num_sampled_pos} pos, IoU "
                        f"{gt.best_iou:.2f}", g, colour))
    return entries


def draw_roi_sampling(view: RoISamplingView, show_unsampled: bool = False) -> np.ndarray:
    """The RoI sampling picture of ``view``: the positives' and the negatives' panels and the
    legend -> (height, width, 3) uint8 BGR; its size is :func:`assignment_canvas_size`'s for
    two panels."""
    entries = rcnn_legend_entries(view, show_unsampled)
    height, width = assignment_canvas_size(view.pad_shape, 2, len(entries))
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    scale = panel_scale(view.pad_shape)
    ph, pw = round(view.pad_shape[0] * scale), round(view.pad_shape[1] * scale)
    colours = distinct_colours(len(view.gts))
    for k, positives in enumerate((True, False)):
        x = GAP + k * (pw + GAP)
        put_text(canvas, fit_text(rcnn_panel_title(view, positives), pw - 4),
                 (x + 2, GAP + TITLE_H - 5))
        canvas[GAP + TITLE_H:GAP + TITLE_H + ph, x:x + pw] = draw_rcnn_panel(
            view, positives, scale, colours, show_unsampled)
    draw_legend(canvas, (TITLE_H + ph + GAP) + GAP, entries, colours)  # one row of panels
    return canvas
