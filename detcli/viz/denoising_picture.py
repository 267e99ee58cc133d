"""The denoising panel of ``det viz assign`` on DINO (OpenCV), from a
:class:`~detcli.analysis.denoising_view.DenoisingView`: which denoising queries belong to which
GT, drawn for the first ``groups`` groups.

s: the panel scale; images are uint8 BGR. In the colour of its GT: the GT thick; each positive
query's noised box dashed, the box it predicts (last decoder layer) thin and solid, a line from
the one's centre to the other's; each negative query's noised box in short dashes at
:data:`NEGATIVE_SHADE` of the colour (its prediction is not drawn: only its class is trained,
to background).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from detcli.viz.canvas import centres, dashed_rectangle, image_panel, point

if TYPE_CHECKING:
    from detcli.analysis.denoising_view import DenoisingView
    from detcli.analysis.query_matching import QueryMatching

NEGATIVE_SHADE = 0.55  # a negative query's colour: its GT's, darkened


def panel_title(view: DenoisingView, groups: int) -> str:
    shown = min(groups, view.num_groups)
    which = "group 0" if shown == 1 else f"groups 0-{shown - 1}"
    return f"denoising {which} of {view.num_groups} ({view.num_queries} queries)"


def draw_denoising_panel(matching: QueryMatching, view: DenoisingView, groups: int,
                         scale: float, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """The GT boxes and their denoising queries of the first ``groups`` groups."""
    panel = image_panel(matching.image, matching.img_shape, scale)
    for g, colour in enumerate(colours):
        dark = tuple(int(c * NEGATIVE_SHADE) for c in colour)
        for query in view.of_gt(g, groups):
            box = np.asarray(query.box, np.float32) * scale
            if query.negative:
                dashed_rectangle(panel, box, dark, dash=2)
                continue
            dashed_rectangle(panel, box, colour)
            if query.pred_box is None:
                continue
            pred = np.asarray(query.pred_box, np.float32) * scale
            cv2.rectangle(panel, point(pred[:2]), point(pred[2:]), colour, 1)
            cv2.line(panel, point(centres(box[None])[0]), point(centres(pred[None])[0]),
                     colour, 1, cv2.LINE_AA)
    for gt, colour in zip(matching.gts, colours):
        box = np.asarray(gt.box, np.float32) * scale
        cv2.rectangle(panel, point(box[:2]), point(box[2:]), colour, 2)
    return panel


def denoising_legend(view: DenoisingView) -> list[str]:
    """The legend's texts: the styles, the layout and where the predictions come from."""
    return ["denoising: a positive query's noised box dashed, its prediction thin",
            "a negative query's noised box in short dashes, darker",
            f"{view.num_groups} groups x 2 x {view.num_gts} GT; box noise "
            f"{view.box_noise_scale:g}, label noise {view.label_noise_scale:g}",
            view.source_text]
