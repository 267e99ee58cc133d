"""Drawing instance masks: a filled mask changes exactly its pixels, each toward its class
colour (interior: round(0.5 * pixel + 0.5 * colour); the one-pixel contour: the colour), in
pictures of detections (bitmaps or RLE) and of the GT, enlarged with the image."""

from __future__ import annotations

import numpy as np
import torch

from detcli.data.masks_io import NoMasks
from detcli.structures.detections import Detections
from detcli.viz.draw import (
    TITLE_HEIGHT,
    class_colour,
    draw_detections,
    draw_masks,
    gt_masks,
    prediction_vs_gt,
)

NAMES = ("square", "circle")
GREY = 100


def grey(h: int = 60, w: int = 80) -> np.ndarray:
    return np.full((h, w, 3), GREY, dtype=np.uint8)


def rect(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y1:y2, x1:x2] = True
    return mask


def blend(label: int) -> tuple[int, ...]:
    """GREY half-way to the class colour, rounded half up."""
    return tuple(int(np.floor(0.5 * GREY + 0.5 * c + 0.5)) for c in class_colour(label))


def test_a_mask_over_a_rectangle_changes_exactly_its_pixels_toward_the_class_colour():
    image = grey()
    mask = rect(60, 80, 10, 20, 30, 35)  # 20 x 15 pixels
    out = draw_masks(image, mask[None], [1])
    assert (image == GREY).all()  # the input is untouched
    changed = (out != image).any(axis=2)  # (H, W)
    np.testing.assert_array_equal(changed, mask)
    assert tuple(out[27, 20]) == blend(1)  # interior
    for y, x in ((20, 10), (34, 29), (25, 10), (20, 15)):  # corners and edges: the contour
        assert tuple(out[y, x]) == class_colour(1)
    assert tuple(out[21, 11]) == blend(1)  # one pixel in from the corner: the fill


def test_two_masks_take_their_own_colours_and_an_empty_mask_draws_nothing():
    masks = np.stack([rect(60, 80, 0, 0, 10, 10), rect(60, 80, 50, 40, 70, 55),
                      np.zeros((60, 80), bool)])
    out = draw_masks(grey(), masks, [0, 1, 0])
    assert tuple(out[5, 5]) == blend(0) and tuple(out[47, 60]) == blend(1)
    np.testing.assert_array_equal((out != GREY).any(axis=2), masks[0] | masks[1])


def test_detections_draw_their_masks_from_bitmaps_or_from_rle_alike():
    mask = rect(60, 80, 10, 20, 30, 35)
    dets = Detections(torch.tensor([[10.0, 20, 30, 35]]), torch.tensor([0.9]), torch.tensor([1]),
                      masks=torch.from_numpy(mask[None]))
    from_bitmaps = draw_detections(grey(), dets, NAMES)
    from_rle = draw_detections(grey(), dets.with_encoded_masks(), NAMES)
    np.testing.assert_array_equal(from_bitmaps, from_rle)
    assert tuple(from_bitmaps[27, 20]) == blend(1)  # filled under the box outline
    boxes_only = draw_detections(grey(), Detections(dets.boxes, dets.scores, dets.labels), NAMES)
    assert tuple(boxes_only[27, 20]) == (GREY,) * 3


def test_the_prediction_panel_enlarges_masks_with_the_image_and_the_gt_panel_draws_gt_masks():
    image = grey(60, 80)  # enlarged 4 times to 240 x 320 (min_side 320)
    mask = rect(60, 80, 10, 20, 30, 35)
    dets = Detections(torch.tensor([[10.0, 20, 30, 35], [50, 5, 70, 15]]), torch.tensor([0.9, 0.1]),
                      torch.tensor([1, 0]),
                      masks=torch.from_numpy(np.stack([mask, rect(60, 80, 50, 5, 70, 15)])))
    gt = {"bboxes": np.array([[40.0, 40, 60, 50]]), "labels": np.array([0])}
    gt_mask = rect(60, 80, 40, 40, 60, 50)[None]
    panel = prediction_vs_gt(image, dets, gt, NAMES, score_thr=0.3, gt_instance_masks=gt_mask)
    left = panel[TITLE_HEIGHT:TITLE_HEIGHT + 240, :320]
    right = panel[TITLE_HEIGHT:TITLE_HEIGHT + 240, 320 + 6:]
    assert tuple(left[27 * 4 + 1, 20 * 4 + 1]) == blend(1)  # the kept mask, enlarged
    assert tuple(left[10 * 4, 60 * 4]) == (GREY,) * 3  # the 0.1 detection: not drawn
    assert tuple(right[45 * 4 + 1, 50 * 4 + 1]) == blend(0)  # the GT mask
    assert tuple(right[27 * 4 + 1, 20 * 4 + 1]) == (GREY,) * 3


def test_gt_masks_of_a_dataset_rasterise_its_segmentations():
    polygons = [[[10, 20, 30, 20, 30, 35, 10, 35]], None]  # a rectangle; an annotation without
    masks = gt_masks(polygons, 60, 80)
    np.testing.assert_array_equal(masks[0], rect(60, 80, 10, 20, 30, 35))
    assert not masks[1].any()
    assert gt_masks(NoMasks("VOCDataset x has no instance masks"), 60, 80) is None
