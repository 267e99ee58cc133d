"""OpenCV drawing for ``det viz``: the assignment picture, and grids of dataset pictures.

H, W: the network input (padding included); R priors, G GT boxes, I ignore boxes, L levels;
s: the panel scale (network-input pixels -> picture pixels). Images are uint8 BGR.

The assignment picture is a grid of panels with a legend under it::

    +-----------------+-----------------+-----------------+   C columns (3 at most; 2 for four
    | title           | title           | title           |   panels); each panel: a TITLE_H
    | overview        | level 0         | level 1         |   title bar over the image scaled
    |  (H*s x W*s)    |                 |                 |   to round(H*s) x round(W*s); GAP
    +-----------------+-----------------+-----------------+   pixels between and around cells
    | legend entries, ENTRY_W wide each, LINE_H high, wrapped to the picture width       |
    +-------------------------------------------------------------------------------------+

so the picture is ``C*(W*s + GAP) + GAP`` wide and ``rows*(TITLE_H + H*s + GAP) + GAP +
lines*LINE_H + GAP`` high (:func:`assignment_canvas_size`). ``s`` brings the input's longer side
into [MIN_SIDE, MAX_SIDE] pixels (1 when it already is).

What is drawn, over the image in grey: GT boxes thick, in one colour per GT; positive priors
thin in the colour of the GT they match, with a dot at their centre; ignored priors grey and
dashed; ignore regions (crowd boxes) grey; sampled negatives, on request, as small dots at
their centres, in the level panels only (the overview would be a carpet of dots). A GT with no
positive gets a red tag and a red legend entry; one whose positives are all low-quality
matches a yellow entry. The overview shows every level at once.

What an assigner explains is drawn too (:class:`~detcli.analysis.assign_view.Explanation`). FCOS:
in each level panel, each GT's eligible region -- where a point of that level may become its
positive under the regress range (and centre sampling) -- is shaded in the GT's colour, the part
too close to every side left clear, the centre-sampling region dashed; the panel title gives
the level's range. ATSS: in each level panel, each GT's candidates that did not become positive are
dashed in its colour, and its legend entry gives its IoU threshold.

The RoI sampling picture of a two-stage detector (:func:`draw_roi_sampling`, the
:class:`~detcli.analysis.roi_sampling.RoISamplingView` of its RoI head) has the same layout with
two panels: the sampled positives, thin in the colour of their GT, and the sampled negatives,
thin in red; GT boxes thick in both; on request the candidates left out of the sample faintly
(positives in their GT's colour in the first panel, the others grey in the second). A GT that
no proposal matches (only its own box, added as a proposal, is positive) gets a yellow legend
entry.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import cv2
import numpy as np


if TYPE_CHECKING:
    from detcli.analysis.roi_sampling import RoISamplingView
    from detcli.analysis.assign_view import AssignmentView

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.4
TITLE_H = 18  # title bar above each panel
LINE_H = 18  # one legend line
ENTRY_W = 200  # one legend entry
GAP = 4
COLS = 3
MIN_SIDE, MAX_SIDE = 256, 800
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)
GREY = (150, 150, 150)
NEG_DOT = (210, 190, 120)
WARN = (40, 40, 220)  # red: a GT without positives
LOW = (40, 200, 230)  # yellow: a GT with low-quality positives only
DIM = 0.7  # the image is darkened so the drawing stands out
REGION_ALPHA = 0.45  # opacity of the shaded FCOS regions
RCNN_NEG = (60, 60, 235)  # red: a sampled negative RoI
FAINT_ALPHA = 0.35  # opacity of the candidates left out of the RoI sample


# Bright, well separated colours on a dark grey picture (RGB, listed for reading); none red,
# which marks GT boxes without positives.
_PALETTE_RGB = ((255, 215, 0), (0, 190, 255), (60, 220, 60), (200, 110, 255), (255, 140, 0),
                (255, 110, 200), (0, 235, 200), (180, 255, 60), (130, 150, 255))


def distinct_colours(count: int) -> list[tuple[int, int, int]]:
    """``count`` BGR colours: the palette, then golden-ratio hues (never red) beyond it."""
    colours = [(b, g, r) for r, g, b in _PALETTE_RGB[:count]]
    for i in range(count - len(colours)):
        hue = (0.12 + i * 0.6180339887) % 1.0
        if hue < 0.05 or hue > 0.93:  # keep red for warnings
            hue = (hue + 0.1) % 1.0
        value = 255 if i % 2 == 0 else 200
        hsv = np.array([[[int(hue * 180), 220, value]]], dtype=np.uint8)  # (1, 1, 3)
        b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
        colours.append((int(b), int(g), int(r)))
    return colours


def panel_scale(pad_shape: tuple[int, int]) -> float:
    """The scale that brings the longer side of ``pad_shape`` into [MIN_SIDE, MAX_SIDE]."""
    longer = max(pad_shape)
    if longer < MIN_SIDE:
        return MIN_SIDE / longer
    if longer > MAX_SIDE:
        return MAX_SIDE / longer
    return 1.0


def grid_columns(num_panels: int) -> int:
    """COLS columns at most; 4 panels make a 2 x 2 square."""
    return 2 if num_panels == 4 else min(num_panels, COLS)


def legend_lines(num_entries: int, width: int) -> int:
    per_line = max(1, (width - GAP) // ENTRY_W)
    return math.ceil(num_entries / per_line)


def assignment_canvas_size(pad_shape: tuple[int, int], num_panels: int,
                           num_legend_entries: int) -> tuple[int, int]:
    """(height, width) of the assignment picture; see the module docstring."""
    scale = panel_scale(pad_shape)
    ph, pw = round(pad_shape[0] * scale), round(pad_shape[1] * scale)
    cols = grid_columns(num_panels)
    rows = math.ceil(num_panels / cols)
    width = cols * (pw + GAP) + GAP
    height = rows * (TITLE_H + ph + GAP) + GAP
    return height + legend_lines(num_legend_entries, width) * LINE_H + GAP, width


def put_text(img: np.ndarray, text: str, org: tuple[int, int], colour=TEXT,
             background: Optional[tuple[int, int, int]] = None) -> None:
    """``text`` with its baseline-left corner at ``org``, on a filled box when ``background``."""
    (tw, th), base = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    x, y = int(org[0]), int(org[1])
    if background is not None:
        cv2.rectangle(img, (x - 1, y - th - 2), (x + tw + 1, y + base - 1), background, -1)
    cv2.putText(img, text, (x, y), FONT, FONT_SCALE, colour, 1, cv2.LINE_AA)


def fit_text(text: str, width: int) -> str:
    """``text``, cut and ended with ".." when it is wider than ``width`` pixels."""
    if cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0] <= width:
        return text
    while len(text) > 1 and cv2.getTextSize(text + "..", FONT, FONT_SCALE, 1)[0][0] > width:
        text = text[:-1]
    return text + ".."


def dashed_rectangle(img: np.ndarray, box: Sequence[float], colour, dash: int = 4) -> None:
    """A 1-pixel dashed rectangle: dashes of ``dash`` pixels with ``dash - 1`` pixel gaps."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    for (ax, ay), (bx, by) in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)),
                               ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length, 2 * dash - 1):
            end = min(start + dash, length)
            p = (ax + (bx - ax) * start // max(length, 1), ay + (by - ay) * start // max(length, 1))
            q = (ax + (bx - ax) * end // max(length, 1), ay + (by - ay) * end // max(length, 1))
            cv2.line(img, p, q, colour, 1)


def draw_dots(img: np.ndarray, points: np.ndarray, colour, size: int = 2) -> None:
    """``size`` x ``size`` squares at (P, 2) (x, y) points, set in one numpy assignment."""
    if len(points) == 0:
        return
    h, w = img.shape[:2]
    xy = np.round(points).astype(np.int64)  # (P, 2)
    offsets = np.stack(np.meshgrid(np.arange(size), np.arange(size)), -1).reshape(-1, 2) - size // 2
    pix = (xy[:, None, :] + offsets[None]).reshape(-1, 2)  # (P, size*size, 2) -> (P*size^2, 2)
    keep = (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
    img[pix[keep, 1], pix[keep, 0]] = colour


def scaled_image(image: np.ndarray, scale: float) -> np.ndarray:
    """The image resized by ``scale``, in grey and darkened by DIM, so that the coloured
    drawing stands out (and the PNG stays small)."""
    h, w = image.shape[:2]
    size = (round(w * scale), round(h * scale))
    out = image if scale == 1.0 else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    grey = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY).astype(np.float32) * DIM  # (h', w')
    return cv2.cvtColor(grey.astype(np.uint8), cv2.COLOR_GRAY2BGR)  # (h', w', 3)


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2  # (B, 4) -> (B, 2)


def draw_panel(view: AssignmentView, level: Optional[int], scale: float,
               colours: list[tuple[int, int, int]], show_negatives: bool) -> np.ndarray:
    """One panel (no title): the priors of ``level`` (None: every level) over the image."""
    panel = scaled_image(view.image, scale)
    h, w = view.img_shape
    if (h, w) != tuple(view.image.shape[:2]):  # where the padding starts
        cv2.rectangle(panel, (0, 0), (round(w * scale), round(h * scale)), (90, 90, 90), 1)
    on_level = np.ones(len(view.level), bool) if level is None else view.level == level  # (R,)
    priors = view.priors * scale  # (R, 4)
    if show_negatives and level is not None:
        draw_dots(panel, _centres(priors[on_level & view.sampled_neg]), NEG_DOT)
    draw_ignore_boxes(panel, view.ignore_boxes * scale)
    for box in priors[on_level & view.ignored]:
        dashed_rectangle(panel, box, GREY)
    if view.explained.regions is not None and level is not None:
        draw_regions(panel, view.explained.regions, level, scale, colours)
    if view.explained.candidates is not None and level is not None:
        draw_candidates(panel, view, on_level, priors, colours)
    positive = on_level & (view.gt_index >= 0)  # (R,)
    for box, gt in zip(priors[positive], view.gt_index[positive]):
        cv2.rectangle(panel, _pt(box[:2]), _pt(box[2:]), colours[gt], 1)
    for centre, gt in zip(_centres(priors[positive]), view.gt_index[positive]):
        cv2.circle(panel, _pt(centre), 2, colours[gt], -1)
    for g, box in enumerate(view.gt_boxes * scale):
        cv2.rectangle(panel, _pt(box[:2]), _pt(box[2:]), colours[g], 2)
        zero = view.gts[g].num_pos == 0
        tag = f"#{g} 0 pos" if zero else f"#{g}"
        put_text(panel, tag, (box[0] + 1, max(box[1] - 3, 10)), TEXT if zero else (0, 0, 0),
                 background=WARN if zero else colours[g])
    return panel


def _pt(xy: Sequence[float]) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def _empty(box: np.ndarray) -> bool:
    return bool(box[2] <= box[0] or box[3] <= box[1])


def draw_regions(panel: np.ndarray, regions: dict, level: int, scale: float,
                 colours: list[tuple[int, int, int]]) -> None:
    """FCOS: shade each GT's eligible region on ``level`` (L x G boxes), minus the part too
    close to every side, and dash its centre-sampling region; in place."""
    for g, colour in enumerate(colours):
        eligible = regions["eligible"][level, g] * scale  # (4,)
        if not _empty(eligible):
            shaded = panel.copy()
            cv2.rectangle(shaded, _pt(eligible[:2]), _pt(eligible[2:]), colour, -1)
            hole = regions["too_close"][level, g] * scale  # (4,)
            if not _empty(hole):
                x1, y1 = (max(v, 0) for v in _pt(hole[:2]))  # no negative (wrapping) index
                x2, y2 = _pt(hole[2:])
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


LegendEntry = tuple[str, object, tuple[int, int, int]]  # text, marker, text colour


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
    c = view.counts
    entries.append((f"pos {c['positive']}  neg {c['negative']}  ign {c['ignored']}", None, TEXT))
    for g, gt in enumerate(view.gts):
        low = " (low IoU)" if gt.low_quality_only else ""
        thr = "" if gt.iou_threshold is None else f", thr {gt.iou_threshold:.2f}"
        colour = WARN if gt.num_pos == 0 else LOW if gt.low_quality_only else TEXT
        entries.append((f"#{g} {gt.class_name[:12]}: {gt.num_pos} pos{low}{thr}", g, colour))
    return entries


def _draw_legend(canvas: np.ndarray, top: int, entries: list[LegendEntry],
                 colours: list[tuple[int, int, int]]) -> None:
    per_line = max(1, (canvas.shape[1] - GAP) // ENTRY_W)
    for k, (text, marker, colour) in enumerate(entries):
        x = GAP + (k % per_line) * ENTRY_W
        y = top + (k // per_line) * LINE_H
        mid = y + LINE_H // 2
        if marker == "gt":
            cv2.rectangle(canvas, (x, mid - 5), (x + 14, mid + 5), TEXT, 2)
        elif marker == "pos":
            cv2.rectangle(canvas, (x, mid - 5), (x + 14, mid + 5), TEXT, 1)
            cv2.circle(canvas, (x + 7, mid), 2, TEXT, -1)
        elif marker == "ignored":
            dashed_rectangle(canvas, (x, mid - 5, x + 14, mid + 5), GREY)
        elif marker == "neg":
            draw_dots(canvas, np.array([[x + 7, mid]], np.float32), NEG_DOT)
        elif marker == "region":
            cv2.rectangle(canvas, (x, mid - 5), (x + 14, mid + 5), GREY, -1)
        elif marker == "candidate":
            dashed_rectangle(canvas, (x, mid - 5, x + 14, mid + 5), TEXT)
        elif marker == "rcnn_pos":
            cv2.rectangle(canvas, (x, mid - 5), (x + 14, mid + 5), TEXT, 1)
        elif marker == "rcnn_neg":
            cv2.rectangle(canvas, (x, mid - 5), (x + 14, mid + 5), RCNN_NEG, 1)
        elif marker == "unsampled":
            cv2.rectangle(canvas, (x, mid - 5), (x + 14, mid + 5), (90, 90, 90), 1)
        elif isinstance(marker, int):
            cv2.rectangle(canvas, (x, mid - 5), (x + 14, mid + 5), colours[marker], -1)
        text_x = x if marker is None else x + 20
        put_text(canvas, fit_text(text, ENTRY_W - (text_x - x) - 6), (text_x, mid + 4), colour)


def draw_assignment(view: AssignmentView, levels: Optional[Sequence[int]] = None,
                    show_negatives: bool = False) -> np.ndarray:
    """The assignment picture of ``view``: an overview panel, one panel per level of ``levels``
    (default: every level) and the legend -> (height, width, 3) uint8 BGR."""
    levels = list(range(len(view.strides))) if levels is None else list(levels)
    panels: list[Optional[int]] = [None, *levels]
    entries = legend_entries(view, show_negatives)
    height, width = assignment_canvas_size(view.pad_shape, len(panels), len(entries))
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    scale = panel_scale(view.pad_shape)
    ph, pw = round(view.pad_shape[0] * scale), round(view.pad_shape[1] * scale)
    colours = distinct_colours(len(view.gts))
    cols = grid_columns(len(panels))
    for k, level in enumerate(panels):
        x = GAP + (k % cols) * (pw + GAP)
        y = GAP + (k // cols) * (TITLE_H + ph + GAP)
        put_text(canvas, panel_title(view, level, show_negatives), (x + 2, y + TITLE_H - 5))
        canvas[y + TITLE_H:y + TITLE_H + ph, x:x + pw] = draw_panel(
            view, level, scale, colours, show_negatives)
    rows = math.ceil(len(panels) / cols)
    _draw_legend(canvas, rows * (TITLE_H + ph + GAP) + GAP, entries, colours)
    return canvas


def _faint_boxes(panel: np.ndarray, boxes: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> None:
    """(B, 4) boxes, 1 pixel, each in its colour, blended at FAINT_ALPHA; in place."""
    if len(boxes) == 0:
        return
    layer = panel.copy()
    for box, colour in zip(boxes, colours):
        cv2.rectangle(layer, _pt(box[:2]), _pt(box[2:]), colour, 1)
    cv2.addWeighted(layer, FAINT_ALPHA, panel, 1 - FAINT_ALPHA, 0, dst=panel)


def _gt_tags(panel: np.ndarray, gt_boxes: np.ndarray, colours: list[tuple[int, int, int]]) -> None:
    for g, box in enumerate(gt_boxes):
        cv2.rectangle(panel, _pt(box[:2]), _pt(box[2:]), colours[g], 2)
        put_text(panel, f"#{g}", (box[0] + 1, max(box[1] - 3, 10)), (0, 0, 0),
                 background=colours[g])


def draw_rcnn_panel(view: RoISamplingView, positives: bool, scale: float,
                    colours: list[tuple[int, int, int]], show_unsampled: bool) -> np.ndarray:
    """One RoI panel (no title): the sampled positives (``positives``) or negatives."""
    panel = scaled_image(view.image, scale)
    h, w = view.img_shape
    if (h, w) != tuple(view.image.shape[:2]):  # where the padding starts
        cv2.rectangle(panel, (0, 0), (round(w * scale), round(h * scale)), (90, 90, 90), 1)
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
            cv2.rectangle(panel, _pt(box[:2]), _pt(box[2:]), colours[g], 1)
    else:
        for box in boxes[view.sampled_neg]:
            cv2.rectangle(panel, _pt(box[:2]), _pt(box[2:]), RCNN_NEG, 1)
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
    _draw_legend(canvas, (TITLE_H + ph + GAP) + GAP, entries, colours)  # one row of panels
    return canvas


def draw_ignore_boxes(img: np.ndarray, boxes: np.ndarray) -> None:
    """(I, 4) ignore regions (crowd boxes), grey and labelled "ignore", drawn in place."""
    for box in boxes:
        cv2.rectangle(img, _pt(box[:2]), _pt(box[2:]), GREY, 1)
        put_text(img, "ignore", (box[0] + 2, box[1] + 11), GREY)


def image_grid(images: Sequence[np.ndarray], cols: Optional[int] = None) -> np.ndarray:
    """Images of any sizes in a grid of cells as large as the largest, GAP apart, row-major;
    ``cols`` defaults to ceil(sqrt(count))."""
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    ch = max(im.shape[0] for im in images)
    cw = max(im.shape[1] for im in images)
    grid = np.full((rows * (ch + GAP) + GAP, cols * (cw + GAP) + GAP, 3), BACKGROUND, np.uint8)
    for k, im in enumerate(images):
        y, x = GAP + (k // cols) * (ch + GAP), GAP + (k % cols) * (cw + GAP)
        grid[y:y + im.shape[0], x:x + im.shape[1]] = im
    return grid
