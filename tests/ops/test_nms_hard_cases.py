"""batched_nms against the float64 implementation it replaced, on hard cases.

The reference is the previous ``detcli.ops.nms.batched_nms``: torchvision's ``batched_nms`` in
float64 (a per-cluster Python loop above 1000 boxes on the CPU, 25k on CUDA). Both ways of the
new one are checked: :func:`tiled_nms` (one NMS call, what CUDA runs for every size) and
:func:`batched_nms` (per cluster on the CPU above ``CPU_SINGLE_CALL_MAX_BOXES``).

"Identical" means the same kept boxes with the same score sequence; among equal scores the
reference's order is whatever torch's unstable sort left, the new one keeps the lower index
first, so the reference is compared after putting its ties in index order.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

from detcli.ops.nms import CPU_SINGLE_CALL_MAX_BOXES, batched_nms, per_cluster_nms, tiled_nms


def float64_reference(boxes, scores, idxs, iou_threshold):
    """The implementation before the single-call NMS (kept here as the reference)."""
    if boxes.shape[0] == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    return torchvision.ops.batched_nms(boxes.double(), scores.double(), idxs, float(iou_threshold))


def ties_in_index_order(keep, scores):
    """``keep`` sorted by score, highest first, equal scores by index."""
    keep = keep.sort().values
    return keep[torch.sort(scores.double()[keep], descending=True, stable=True).indices]


def assert_identical(boxes, scores, idxs, thr):
    ref = float64_reference(boxes, scores, idxs, thr)
    for nms in (tiled_nms, batched_nms, per_cluster_nms):
        keep = nms(boxes, scores, idxs, thr)
        assert keep.dtype == torch.long
        assert torch.equal(scores[keep], scores[ref]), nms.__name__  # same score sequence
        assert torch.equal(keep, ties_in_index_order(ref, scores)), nms.__name__
    return ref


def jittered(gen, num_boxes, num_objects, size, extent, jitter=0.15):
    """Boxes jittered around ``num_objects`` objects of ``size`` px in [0, extent)."""
    centres = torch.rand(num_objects, 2, generator=gen) * extent
    sides = size * (0.5 + torch.rand(num_objects, 2, generator=gen))
    which = torch.randint(0, num_objects, (num_boxes,), generator=gen)
    c = centres[which] + torch.randn(num_boxes, 2, generator=gen) * sides[which] * jitter
    s = sides[which] * (1 + jitter * torch.randn(num_boxes, 2, generator=gen)).clamp(min=0.1)
    return torch.cat([c - s / 2, c + s / 2], dim=1)  # (B, 4)


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_ties_and_identical_boxes(thr):
    gen = torch.Generator().manual_seed(0)
    boxes = jittered(gen, 600, 20, 40.0, 300.0).clamp(0, 300)
    boxes = torch.cat([boxes, boxes[:200], boxes[:100]])  # exact duplicates
    scores = (torch.rand(900, generator=gen) * 10).floor() / 10  # 10 score values: many ties
    idxs = torch.randint(0, 3, (900,), generator=gen)
    ref = assert_identical(boxes, scores, idxs, thr)
    assert ref.numel() < 900  # something was suppressed


def test_many_clusters_large_coordinates():
    """16 images x 80 classes, boxes anywhere in 0..2000 px, integer and fractional."""
    gen = torch.Generator().manual_seed(1)
    boxes = jittered(gen, 6000, 400, 120.0, 2000.0).clamp(0, 2000)
    boxes[::3] = boxes[::3].round()  # a third on the integer grid: exact-threshold IoUs
    scores = torch.rand(6000, generator=gen)
    idxs = torch.randint(0, 16, (6000,), generator=gen) * 80 + torch.randint(0, 80, (6000,),
                                                                               generator=gen)
    assert_identical(boxes, scores, idxs, 0.5)


def test_tiny_boxes_and_boxes_at_the_origin():
    gen = torch.Generator().manual_seed(2)
    boxes = jittered(gen, 3000, 100, 0.05, 50.0)  # sub-pixel boxes
    boxes[:500] = jittered(gen, 500, 10, 0.01, 0.05).clamp(min=0)  # touching x = 0 or y = 0
    scores = torch.rand(3000, generator=gen)
    idxs = torch.randint(0, 200, (3000,), generator=gen)
    assert_identical(boxes, scores, idxs, 0.5)


def test_negative_coordinates_never_join_clusters():
    """torchvision's shift ``idx * (max + 1)`` assumes coordinates >= 0: here it would move
    box 1 of cluster 1 exactly onto box 0 of cluster 0. The tiles use the span max - min + 1."""
    boxes = torch.tensor([[-100.0, 0.0, -50.0, 50.0], [-151.0, -51.0, -101.0, -1.0]])
    scores = torch.tensor([0.9, 0.8])
    idxs = torch.tensor([0, 1])
    assert torchvision.ops.boxes._batched_nms_coordinate_trick(
        boxes, scores, idxs, 0.5).tolist() == [0]  # the shortcut's mistake
    assert tiled_nms(boxes, scores, idxs, 0.5).tolist() == [0, 1]
    gen = torch.Generator().manual_seed(3)
    many = jittered(gen, 3000, 60, 60.0, 600.0) - 300.0  # unclipped: x, y in about -330..330
    scores = torch.rand(3000, generator=gen)
    idxs = torch.randint(0, 40, (3000,), generator=gen)
    assert_identical(many, scores, idxs, 0.6)  # the reference loops per cluster here


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_150k_boxes_one_nms_call_and_the_same_result():
    """8 images x 5 levels of 3750 proposals (an RPN batch above torchvision's 100k-box loop
    threshold on CUDA): one NMS call, no other data-dependent op, the reference's result.

    Ten objects per cluster keep the CPU's single call short (it costs kept x B: ~1.5 s)."""
    gen = torch.Generator().manual_seed(4)
    boxes = jittered(gen, 150_000, 10, 60.0, 1216.0, jitter=0.05).clamp(0, 1216)
    scores = torch.rand(150_000, generator=gen)
    idxs = torch.randint(0, 40, (150_000,), generator=gen)
    with _Ops() as ops:
        keep = tiled_nms(boxes, scores, idxs, 0.5)
    assert ops.names.count("torchvision.nms") == 1
    assert not {"aten.nonzero", "aten._unique2", "aten._local_scalar_dense"} & set(ops.names)
    ref = float64_reference(boxes, scores, idxs, 0.5)
    assert 40 * 5 < ref.numel() < 40 * 30  # each cluster keeps a few boxes per object
    assert torch.equal(scores[keep], scores[ref])
    assert torch.equal(keep, ties_in_index_order(ref, scores))
    assert boxes.shape[0] > CPU_SINGLE_CALL_MAX_BOXES
    assert torch.equal(batched_nms(boxes, scores, idxs, 0.5), keep)  # the CPU's per-cluster way


def test_empty_and_single_box():
    empty = torch.zeros(0, 4)
    for nms in (tiled_nms, batched_nms):
        if nms is batched_nms:
            assert nms(empty, torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0
        assert nms(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.5]),
                   torch.tensor([7]), 0.5).tolist() == [0]
