"""The RoI sampling picture of ``det viz assign`` for a two-stage detector (OpenCV), from a
:class:`~detcli.analysis.roi_sampling.RoISamplingView`: the layout of
:mod:`detcli.viz.canvas` with two panels.

R' candidates, G GT boxes; s: the panel scale. Images are uint8 BGR.

The first panel shows the sampled positives, thin in the colour of their GT, the second the
sampled negatives, thin in red; GT boxes thick in both; on request the candidates left out of
the sample faintly (positives in their GT's colour in the first panel, the others grey in the
second). A GT that no proposal matches (only its own box, added as a proposal, is positive)
gets a yellow legend entry.

A Cascade R-CNN stage's view (``RoISamplingView.stage``) starts its legend with the stage, its
IoU threshold and where its boxes come from (the proposals, or the previous stage's RoIs
refined), and adds the mean IoU of the sampled positive proposals.

A Mask R-CNN view (``RoISamplingView.mask_targets``) adds a strip below: for each sampled
positive (the first MAX_MASK_TILES, candidate order), the image inside its RoI and its h x w
mask target side by side, both MASK_ZOOM times enlarged (nearest neighbour: one target pixel
is a MASK_ZOOM x MASK_ZOOM block, white for 1, black for 0), tagged with its GT's index.
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
MASK_ZOOM = 2  # a mask target pixel is drawn as MASK_ZOOM x MASK_ZOOM pixels
MAX_MASK_TILES = 24  # sampled positives shown in the mask strip


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
        stage = "" if view.stage is None else f"s{view.stage.index} "
        return (f"{stage}sampled positives: {c['sampled_positive']} of "
                f"{c['assigned_positive']}{limit}")
    return f"sampled negatives: {c['sampled_negative']} of {c['assigned_negative']}"


def rcnn_legend_entries(view: RoISamplingView, show_unsampled: bool) -> list[LegendEntry]:
    """(text, marker, text colour) of the RoI picture: "gt", "rcnn_pos", "rcnn_neg", "unsampled",
    None (text), or a GT's index, yellow when no proposal matches it."""
    entries: list[LegendEntry] = []
    if view.stage is not None:
        stage, thr = view.stage, view.stage.pos_iou_thr
        entries.append((f"stage s{stage.index} ({stage.index + 1} of {stage.num_stages})"
                        + ("" if thr is None else f": IoU >= {thr:g}"), None, TEXT))
        entries.append((stage.input_legend, None, TEXT))
    entries += [("GT box", "gt", TEXT), ("sampled positive", "rcnn_pos", TEXT),
                ("sampled negative", "rcnn_neg", TEXT)]
    if show_unsampled:
        entries.append(("not sampled (faint)", "unsampled", TEXT))
    c = view.counts
    source = {"jitter": "jittered GT", "checkpoint": "RPN", "refined": "refined"}[view.source]
    entries.append((f"{c['proposals']} {source} proposals + {c['gt_added']} GT", None, TEXT))
    entries.append((f"{c['not_sampled']} of {c['candidates']} not sampled", None, TEXT))
    if view.stage is not None:
        mean = view.mean_positive_iou
        entries.append(("mean IoU of positives " + ("-" if mean is None else f"{mean:.2f}"),
                        None, TEXT))
    for g, gt in enumerate(view.gts):
        colour = LOW if gt.num_proposals == 0 else TEXT
        entries.append((f"#{g} {gt.class_name[:10]}: {gt.num_sampled_pos} pos, IoU "
                        f"{gt.best_iou:.2f}", g, colour))
    return entries


def mask_tile_positions(num: int, mask_size: int, width: int) -> list[tuple[int, int]]:
    """(y, x) of the mask target of each of ``num`` tiles in a strip ``width`` wide, relative
    to the strip (its RoI's crop is the same size, left of it)."""
    side = mask_size * MASK_ZOOM
    per_row = max((width - GAP) // (2 * side + 2 * GAP), 1)
    return [(2 * TITLE_H + (k // per_row) * (side + TITLE_H),  # the strip's title, a tag row
             GAP + (k % per_row) * (2 * side + 2 * GAP) + side) for k in range(num)]


def draw_mask_strip(view: RoISamplingView, width: int) -> np.ndarray:
    """The mask targets of the sampled positives next to their RoIs' image crops (module
    docstring) -> (height, width, 3) uint8 BGR."""
    assert view.mask_targets is not None
    chosen = np.flatnonzero(view.sampled_pos)[:MAX_MASK_TILES]  # candidate indices
    mask_size = view.mask_targets.shape[-1]
    side = mask_size * MASK_ZOOM
    positions = mask_tile_positions(len(chosen), mask_size, width)
    bottom = positions[-1][0] + side if positions else TITLE_H
    strip = np.full((bottom + GAP, width, 3), BACKGROUND, np.uint8)
    total = int(view.sampled_pos.sum())
    put_text(strip, fit_text(f"mask targets ({mask_size} x {mask_size}) of the sampled "
                             f"positives: {len(chosen)} of {total}", width - 4),
             (GAP + 2, TITLE_H - 5))
    colours = distinct_colours(len(view.gts))
    height, img_w = view.image.shape[:2]
    for k, (y, x) in zip(chosen, positions):
        x1, y1, x2, y2 = view.candidates[k]
        cx1, cy1 = int(np.clip(np.floor(x1), 0, img_w - 1)), int(np.clip(np.floor(y1), 0, height - 1))
        cx2, cy2 = int(np.clip(np.ceil(x2), cx1 + 1, img_w)), int(np.clip(np.ceil(y2), cy1 + 1, height))
        crop = cv2.resize(view.image[cy1:cy2, cx1:cx2], (side, side),
                          interpolation=cv2.INTER_LINEAR)
        target = np.kron(view.mask_targets[k] > 0.5, np.ones((MASK_ZOOM, MASK_ZOOM), bool))
        strip[y:y + side, x - side:x] = crop
        strip[y:y + side, x:x + side] = np.where(target[..., None], 255, 0).astype(np.uint8)
        g = int(view.gt_index[k])
        put_text(strip, f"#{g}", (x - side + 1, y - 4), (0, 0, 0), background=colours[g])
    return strip


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
    if view.mask_targets is None:
        return canvas
    return np.concatenate([canvas, draw_mask_strip(view, width)], axis=0)
