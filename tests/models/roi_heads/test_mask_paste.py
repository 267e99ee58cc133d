"""Pasting mask probabilities into an image: known pixels for a known box, the chunked and
region-bounded paste equal to a whole-image paste, and the detector-level unbinding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from detcli.errors import DetError
from detcli.models.roi_heads import paste_detections, paste_masks
from detcli.models.roi_heads.mask_paste import chunk_size, paste_in_chunks
from detcli.structures.detections import DetectionBatch


def test_a_mask_pasted_into_a_known_box_gives_known_pixels():
    """A 2 x 2 mask with only its top-left cell on, over the box (0, 0, 4, 4) of a 5 x 5 image.
    Pixel x has centre x + 0.5, i.e. mask coordinate (x + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75,
    1.25, 1.75 (cell centres at 0 and 1, zero beyond the mask): the weight on cell 0 is 0.75,
    0.75, 0.25, 0, 0 along each axis, so the value is their product; >= 0.5 keeps the 2 x 2
    top-left pixels."""
    probs = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # (1, 2, 2)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    weight = torch.tensor([0.75, 0.75, 0.25, 0.0, 0.0])
    soft = paste_masks(probs, boxes, (5, 5), threshold=None)
    torch.testing.assert_close(soft[0], weight[:, None] * weight[None, :])
    hard = paste_masks(probs, boxes, (5, 5))
    assert hard.dtype == torch.bool
    assert hard[0].nonzero().tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]


def test_a_full_mask_covers_its_box_and_nothing_outside():
    """An all-ones mask over (1, 1, 3, 3) in a 4 x 4 image: pixels 1-2 are inside (value 1),
    pixels 0 and 3 sit a half box-pixel outside, at mask coordinate -1 or 2 (value 0)."""
    out = paste_masks(torch.ones(1, 28, 28), torch.tensor([[1.0, 1.0, 3.0, 3.0]]), (4, 4))
    assert out[0].int().tolist() == [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


def _whole_image_paste(probs: torch.Tensor, boxes: torch.Tensor, height: int,
                       width: int) -> torch.Tensor:
    """The same geometry over every pixel of the image at once (MMDetection's GPU path)."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    x1, y1, x2, y2 = boxes.unbind(1)
    v = (ys[None] - y1[:, None]) / (y2 - y1)[:, None] * 2 - 1
    u = (xs[None] - x1[:, None]) / (x2 - x1)[:, None] * 2 - 1
    grid = torch.stack([u[:, None, :].expand(-1, height, -1),
                        v[:, :, None].expand(-1, -1, width)], dim=3)
    return F.grid_sample(probs[:, None], grid, align_corners=False)[:, 0]


def test_chunked_region_paste_equals_the_whole_image_paste():
    """Chunks of any size (one detection per chunk, as on the CPU, or all seven together, as a
    GPU's budget allows) and the per-chunk region give the whole-image result: the same values
    inside the regions, nothing >= 0.5 outside them."""
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(7, 28, 28, generator=gen)
    xy = torch.rand(7, 2, generator=gen) * torch.tensor([60.0, 40.0])
    wh = 3 + torch.rand(7, 2, generator=gen) * 50
    boxes = torch.cat([xy, xy + wh], dim=1)
    reference = _whole_image_paste(probs, boxes, 64, 80)
    one_at_a_time = paste_masks(probs, boxes, (64, 80))  # the CPU's chunks
    assert torch.equal(one_at_a_time, reference >= 0.5)
    soft = paste_masks(probs, boxes, (64, 80), threshold=None)
    inside = soft > 0
    torch.testing.assert_close(soft[inside], reference[inside])
    assert (reference[~inside] < 0.5).all()
    # a GPU's chunks (as its memory budget sizes them): several detections over their region
    for chunk in (3, 7):
        assert torch.equal(paste_in_chunks(probs, boxes, (64, 80), 0.5, chunk), reference >= 0.5)


def test_chunk_sizes():
    """One at a time on the CPU; on a GPU 256 MiB / (3 float32 x 800 x 1333 pixels) = 20."""
    assert chunk_size(torch.device("cpu"), 800, 1333) == 1
    assert chunk_size(torch.device("cuda"), 800, 1333) == 20
    assert chunk_size(torch.device("cuda"), 8000, 13330) == 1


def test_empty_and_degenerate_boxes():
    assert paste_masks(torch.zeros(0, 28, 28), torch.zeros(0, 4), (6, 5)).shape == (0, 6, 5)
    # a zero-width box samples at u = 0 (MMDetection maps the division's infinity to 0)
    out = paste_masks(torch.ones(1, 28, 28), torch.tensor([[2.0, 1.0, 2.0, 4.0]]), (6, 6))
    assert out.shape == (1, 6, 6)
    outside = paste_masks(torch.ones(1, 28, 28), torch.tensor([[50.0, 50.0, 60.0, 60.0]]),
                          (6, 6))
    assert not outside.any()


def test_paste_detections_unbinds_and_pastes_each_image_at_its_size():
    boxes = torch.zeros(2, 3, 4)
    boxes[0, 0] = torch.tensor([0.0, 0.0, 4.0, 4.0])
    boxes[1, :2] = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0]])
    probs = torch.zeros(2, 3, 28, 28)
    probs[0, 0] = 1.0
    probs[1, 0] = 1.0  # image 1's second detection has an empty mask
    dets = DetectionBatch(boxes=boxes, scores=torch.ones(2, 3), labels=torch.zeros(2, 3).long(),
                          num_dets=torch.tensor([1, 2]), mask_probs=probs)
    out = paste_detections(dets, [(4, 4), (5, 6)])
    assert [tuple(d.masks.shape) for d in out] == [(1, 4, 4), (2, 5, 6)]
    assert out[0].masks.all()
    assert out[1].masks[0].sum() == 4 and not out[1].masks[1].any()
    boxes_only = paste_detections(DetectionBatch(boxes, torch.ones(2, 3),
                                                 torch.zeros(2, 3).long(), torch.tensor([1, 2])),
                                  [(4, 4), (5, 6)])
    assert all(d.masks is None for d in boxes_only)
    with pytest.raises(DetError, match="one image size per image"):
        paste_detections(dets, [(4, 4)])
