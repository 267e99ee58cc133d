"""The pictures' canvas (OpenCV): a grid of titled panels over a legend, and what they are
drawn with -- colours, text, dashed boxes, dots, the dimmed image.

H, W: the network input (padding included); s: the panel scale (network-input pixels ->
picture pixels). Images are uint8 BGR.

A picture (the assignment picture, :mod:`detcli.viz.assign_picture`; the RoI sampling
picture, :mod:`detcli.viz.roi_picture`) is a grid of panels with a legend under it::

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

Colours: one per GT (:func:`distinct_colours`, never red); red marks a GT without positives
(WARN) and a sampled negative RoI (RCNN_NEG), yellow a GT whose positives are all low-quality
matches (LOW), grey what is ignored.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import cv2
import numpy as np

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
RCNN_NEG = (60, 60, 235)  # red: a sampled negative RoI


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


def image_panel(image: np.ndarray, img_shape: tuple[int, int], scale: float) -> np.ndarray:
    """A panel's background: the (H, W, 3) network input scaled and dimmed
    (:func:`scaled_image`), with a grey frame where the padding starts when there is padding
    (``img_shape`` = (h, w) before padding)."""
    panel = scaled_image(image, scale)
    h, w = img_shape
    if (h, w) != tuple(image.shape[:2]):  # where the padding starts
        cv2.rectangle(panel, (0, 0), (round(w * scale), round(h * scale)), (90, 90, 90), 1)
    return panel


def centres(boxes: np.ndarray) -> np.ndarray:
    """(B, 4) boxes -> (B, 2) centres."""
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def point(xy: Sequence[float]) -> tuple[int, int]:
    """An (x, y) pair rounded to OpenCV's integer pixel coordinates."""
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def is_empty(box: np.ndarray) -> bool:
    """Whether the (4,) box has no area."""
    return bool(box[2] <= box[0] or box[3] <= box[1])


LegendEntry = tuple[str, object, tuple[int, int, int]]  # text, marker, text colour


def draw_legend(canvas: np.ndarray, top: int, entries: list[LegendEntry],
                colours: list[tuple[int, int, int]]) -> None:
    """The legend entries from row ``top`` of ``canvas``, ENTRY_W wide each, wrapped to its
    width; a marker names what its swatch shows (see the pictures' ``legend_entries``)."""
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
        elif marker == "point":
            cv2.circle(canvas, (x + 7, mid), 3, TEXT, 1)
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


def panel_grid(pad_shape: tuple[int, int],
               panels: Sequence[tuple[str, Callable[[float], np.ndarray]]],
               entries: list[LegendEntry], colours: list[tuple[int, int, int]]) -> np.ndarray:
    """A picture of titled panels in :func:`grid_columns` columns, row-major, and the legend
    under them: each panel is ``(title, draw)``, ``draw(s)`` the (H s, W s, 3) panel of an
    input of ``pad_shape`` (H, W) at the scale s = :func:`panel_scale`. (height, width, 3)
    uint8 BGR, of :func:`assignment_canvas_size`."""
    height, width = assignment_canvas_size(pad_shape, len(panels), len(entries))
    canvas = np.full((height, width, 3), BACKGROUND, np.uint8)
    scale = panel_scale(pad_shape)
    ph, pw = round(pad_shape[0] * scale), round(pad_shape[1] * scale)
    cols = grid_columns(len(panels))
    for k, (title, draw) in enumerate(panels):
        x = GAP + (k % cols) * (pw + GAP)
        y = GAP + (k // cols) * (TITLE_H + ph + GAP)
        put_text(canvas, title, (x + 2, y + TITLE_H - 5))
        canvas[y + TITLE_H:y + TITLE_H + ph, x:x + pw] = draw(scale)
    rows = math.ceil(len(panels) / cols)
    draw_legend(canvas, rows * (TITLE_H + ph + GAP) + GAP, entries, colours)
    return canvas


def draw_ignore_boxes(img: np.ndarray, boxes: np.ndarray) -> None:
    """(I, 4) ignore regions (crowd boxes), grey and labelled "ignore", drawn in place."""
    for box in boxes:
        cv2.rectangle(img, point(box[:2]), point(box[2:]), GREY, 1)
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
