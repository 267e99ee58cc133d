"""The assignment picture of ``det viz assign`` (OpenCV), from an
:class:`~detcli.analysis.assign_view.AssignmentView`: an overview panel, one panel per FPN
level and a legend, laid out as :mod:`detcli.viz.canvas` describes.

R priors, G GT boxes, I ignore boxes, L levels; s: the panel scale. Images are uint8 BGR.

What is drawn, over the image in grey: GT boxes thick, in one colour per GT; positive priors
thin in the colour of the GT they match, with a dot at their centre; ignored priors grey and
dashed; ignore regions (crowd boxes) grey; sampled negatives, on request, as small dots at
their centres, in the level panels only (the overview would be a carpet of dots). A GT with no
positive gets a red tag and a red legend entry; one whose positives are all low-quality
matches a yellow entry. The overview shows every level at once.

What an assigner explains is drawn too (:class:`~detcli.analysis.assign_explain.Explanation`). FCOS:
in each level panel, each GT's eligible region -- where a point of that level may become its
positive under the regress range (and centre sampling) -- is shaded in the GT's colour, the part
too close to every side left clear, the centre-sampling region dashed; the panel title gives
the level's range. ATSS: in each level panel, each GT's candidates that did not become positive are
dashed in its colour, and its legend entry gives its IoU threshold. The dynamic soft-label
assigner (RTMDet): in each level panel, each GT's candidate points (inside it) that did not
become its positives are hollow circles in its colour; its legend entry gives its dynamic k and
its positives' mean soft label, and a legend line says which predictions the points were ranked
by (a checkpoint's, or the stand-in's).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import cv2
import numpy as np

from detcli.viz.canvas import (
    GREY,
    LOW,
    NEG_DOT,
    TEXT,
    WARN,
    LegendEntry,
    centres,
    dashed_rectangle,
    distinct_colours,
    draw_dots,
    draw_ignore_boxes,
    image_panel,
    is_empty,
    panel_grid,
    point,
    put_text,
)

if TYPE_CHECKING:
    from detcli.analysis.assign_view import AssignmentView

REGION_ALPHA = 0.45  # opacity of the shaded FCOS regions


def draw_panel(view: AssignmentView, level: Optional[int], scale: float,
               colours: list[tuple[int, int, int]], show_negatives: bool) -> np.ndarray:
    """One panel (no title): the priors of ``level`` (None: every level) over the image."""
    panel = image_panel(view.image, view.img_shape, scale)
    on_level = np.ones(len(view.level), bool) if level is None else view.level == level  # (R,)
    priors = view.priors * scale  # (R, 4)
    if show_negatives and level is not None:
        draw_dots(panel, centres(priors[on_level & view.sampled_neg]), NEG_DOT)
    draw_ignore_boxes(panel, view.ignore_boxes * scale)
    for box in priors[on_level & view.ignored]:
        dashed_rectangle(panel, box, GREY)
    if view.explained.regions is not None and level is not None:
        draw_regions(panel, view.explained.regions, level, scale, colours)
    if view.explained.candidates is not None and level is not None:
        draw_candidates(panel, view, on_level, priors, colours)
    if view.explained.costs is not None and level is not None:
        draw_candidate_points(panel, view, on_level, priors, colours)
    positive = on_level & (view.gt_index >= 0)  # (R,)
    for box, gt in zip(priors[positive], view.gt_index[positive]):
        cv2.rectangle(panel, point(box[:2]), point(box[2:]), colours[gt], 1)
    for centre, gt in zip(centres(priors[positive]), view.gt_index[positive]):
        cv2.circle(panel, point(centre), 2, colours[gt], -1)
    for g, box in enumerate(view.gt_boxes * scale):
        cv2.rectangle(panel, point(box[:2]), point(box[2:]), colours[g], 2)
        zero = view.gts[g].num_pos == 0
        tag = f"#{g} 0 pos" if zero else f"#{g}"
        put_text(panel, tag, (box[0] + 1, max(box[1] - 3, 10)), TEXT if zero else (0, 0, 0),
                 background=WARN if zero else colours[g])
    return panel


def draw_regions(panel: np.ndarray, regions: dict, level: int, scale: float,
                 colours: list[tuple[int, int, int]]) -> None:
    """FCOS: shade each GT's eligible region on ``level`` (L x G boxes), minus the part too
    close to every side, and dash its centre-sampling region; in place."""
    for g, colour in enumerate(colours):
        eligible = regions["eligible"][level, g] * scale  # (4,)
        if not is_empty(eligible):
            shaded = panel.copy()
            cv2.rectangle(shaded, point(eligible[:2]), point(eligible[2:]), colour, -1)
            hole = regions["too_close"][level, g] * scale  # (4,)
            if not is_empty(hole):
                x1, y1 = (max(v, 0) for v in point(hole[:2]))  # no negative (wrapping) index
                x2, y2 = point(hole[2:])
                shaded[y1:y2, x1:x2] = panel[y1:y2, x1:x2]
            cv2.addWeighted(shaded, REGION_ALPHA, panel, 1 - REGION_ALPHA, 0, dst=panel)
        if regions["center"] is not None:
            dashed_rectangle(panel, regions["center"][level, g] * scale, colour)


def draw_candidates(panel: np.ndarray, view: AssignmentView, on_level: np.ndarray,
                    priors: np.ndarray, colours: list[tuple[int, int, int]]) -> None:
    """ATSS: each GT's candidates (G, C) on this panel that are not its positives, dashed."""
    for g, index in enumerate(view.explained.candidates):
        index = index[index >= 0]  # (C',)
        index = index[on_level[index] & (view.gt_index[index] != g)]
        for box in priors[index]:
            dashed_rectangle(panel, box, colours[g])


def draw_candidate_points(panel: np.ndarray, view: AssignmentView, on_level: np.ndarray,
                          priors: np.ndarray, colours: list[tuple[int, int, int]]) -> None:
    """Dynamic soft-label assigner: each GT's points inside it (G, R) on this panel that are
    not its positives, as hollow circles."""
    for g, inside in enumerate(view.explained.costs.inside):
        for centre in centres(priors[inside & on_level & (view.gt_index != g)]):
            cv2.circle(panel, point(centre), 2, colours[g], 1)


def _range_text(regions: dict, level: int) -> str:
    lo, hi = regions["regress_ranges"][level]
    return f"[{lo:g}, {'inf' if hi >= 1e8 else format(hi, 'g')}]"


def panel_title(view: AssignmentView, level: Optional[int], show_negatives: bool) -> str:
    on_level = np.ones(len(view.level), bool) if level is None else view.level == level
    pos = int((on_level & (view.gt_index >= 0)).sum())
    ign = int((on_level & view.ignored).sum())
    if level is None:
        return f"all levels: {pos} pos, {ign} ignored"
    regions = view.explained.regions
    if regions is not None:  # FCOS: no ignored points; the range is what matters
        return (f"L{level} stride {view.strides[level]} range {_range_text(regions, level)}: "
                f"{pos} pos")
    text = f"L{level} stride {view.strides[level]}: {pos} pos, {ign} ign"
    if show_negatives:
        text += f", {int((on_level & view.sampled_neg).sum())} neg"
    return text


def legend_entries(view: AssignmentView, show_negatives: bool) -> list[LegendEntry]:
    """(text, marker, text colour): marker is "gt", "pos", "ignored", "neg", "region"
    (FCOS), "candidate" (ATSS), None (text only), or a GT's index (an int) for that GT's
    entry, red without positives, yellow with low-quality positives only."""
    entries: list[LegendEntry] = [("GT box", "gt", TEXT), ("positive prior", "pos", TEXT),
                                  ("ignored prior", "ignored", TEXT)]
    if show_negatives:
        entries.append(("sampled negative", "neg", TEXT))
    if view.explained.regions is not None:
        entries.append(("where a point may be pos", "region", TEXT))
    if view.explained.candidates is not None:
        entries.append(("ATSS candidate, not pos", "candidate", TEXT))
    costs = view.explained.costs
    if costs is not None:
        entries.append(("candidate point, not pos", "point", TEXT))
        stand_in = costs.predictions.startswith("stand-in")
        entries.append(("ranked by stand-in preds:" if stand_in else "ranked by checkpoint",
                        None, LOW if stand_in else TEXT))
        if stand_in:
            entries.append(("GT box jittered, score=IoU", None, LOW))
    c = view.counts
    entries.append((f"pos {c['positive']}  neg {c['negative']}  ign {c['ignored']}", None, TEXT))
    for g, gt in enumerate(view.gts):
        low = " (low IoU)" if gt.low_quality_only else ""
        thr = "" if gt.iou_threshold is None else f", thr {gt.iou_threshold:.2f}"
        if costs is not None:
            k, soft = costs.gts[g].dynamic_k, costs.gts[g].mean_soft_label
            thr = f", k {k}" + (f", q {soft:.2f}" if gt.num_pos else "")
        colour = WARN if gt.num_pos == 0 else LOW if gt.low_quality_only else TEXT
        entries.append((f"#{g} {gt.class_name[:12]}: {gt.num_pos} pos{low}{thr}", g, colour))
    return entries


def draw_assignment(view: AssignmentView, levels: Optional[Sequence[int]] = None,
                    show_negatives: bool = False) -> np.ndarray:
    """The assignment picture of ``view``: an overview panel, one panel per level of ``levels``
    (default: every level) and the legend -> (height, width, 3) uint8 BGR."""
    levels = list(range(len(view.strides))) if levels is None else list(levels)
    panels: list[Optional[int]] = [None, *levels]
    colours = distinct_colours(len(view.gts))
    return panel_grid(view.pad_shape, [
        (panel_title(view, level, show_negatives),
         lambda scale, level=level: draw_panel(view, level, scale, colours, show_negatives))
        for level in panels], legend_entries(view, show_negatives), colours)
