"""Assigning GT in chunks: bitwise the same result as all at once, in a fraction of the memory.

A crowded batch: N = 2 images of 320 x 320, image 0 with G = 500 GT boxes, image 1 with 150
(350 padding slots), several exact duplicates placed across chunk boundaries (slot 7 = slot 40,
slot 31 = slot 32, slot 64 = slot 499, the smallest box: ties that must still go to the same
slot). MaxIoU and
ATSS on RetinaNet-/ATSS-style anchors and FCOS's rule on its points run with
``gt_chunk_size = 0`` (every GT at once) and 32 (16 passes), and every output tensor must be
equal. Peak memory is the largest live tensor storage during the call
(:class:`tests.live_bytes.LiveBytes`, a dispatch mode: torch's CPU allocations are invisible
to tracemalloc). The (N, G, R) float32 IoU matrix alone needs N * G * R * 4 bytes, so all at
once peaks above that; in chunks of 32 the same work fits in well under a quarter of it. No
op that makes the host wait for a GPU (``nonzero``, ``.item()``) runs in either path.
"""

from __future__ import annotations

import pytest
import torch

from detcli.task.assigners import ATSSAssigner, MaxIoUAssigner
from detcli.task.assigners.assign_result import AssignResult
from detcli.task.assigners.fcos_rule import INF, PointTargets, fcos_targets, per_point
from detcli.task.prior_generators import AnchorGenerator, MlvlPointGenerator
from tests.live_bytes import LiveBytes

SIZE = 320
NUM_GTS = (500, 150)
CHUNK = 32
SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique")


def crowded_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """gt_boxes (2, 500, 4), gt_labels (2, 500), ignore_boxes (2, 2, 4), ignore_valid (2, 2)."""
    g = torch.Generator().manual_seed(17)
    slots = max(NUM_GTS)
    centre = torch.rand(2, slots, 2, generator=g) * SIZE
    half = 3 + torch.rand(2, slots, 2, generator=g) * 80
    boxes = torch.cat([centre - half, centre + half], dim=-1).clamp(0, SIZE)  # (2, G, 4)
    labels = torch.randint(0, 5, (2, slots), generator=g)
    boxes[:, 64] = torch.tensor([154.0, 154, 158, 158])  # the smallest box, around point 156
    for a, b in ((7, 40), (31, 32), (64, 499)):  # duplicates across chunk boundaries
        boxes[:, b] = boxes[:, a]
    labels[1, NUM_GTS[1]:] = -1  # image 1: padding slots
    boxes[1, NUM_GTS[1]:] = 0
    ignore = torch.tensor([[[0.0, 0, 40, 40], [200, 200, 260, 300]],
                           [[100.0, 0, 180, 60], [0, 0, 0, 0]]])
    return boxes, labels, ignore, torch.tensor([[True, True], [True, False]])


def anchors(ratios: list[float], octave_base_scale: float, scales_per_octave: int):
    generator = AnchorGenerator(strides=[8, 16, 32, 64], ratios=ratios,
                                octave_base_scale=octave_base_scale,
                                scales_per_octave=scales_per_octave)
    sizes = [(SIZE // s, SIZE // s) for s in (8, 16, 32, 64)]
    per_level = generator.grid_priors(sizes)
    return torch.cat(per_level), [p.shape[0] for p in per_level]


def measured(fn):
    with LiveBytes() as probe:
        out = fn()
    return out, probe


def assert_same(chunked, whole) -> None:
    for name in chunked.__dataclass_fields__:
        a, b = getattr(chunked, name), getattr(whole, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name


def check(run, num_priors: int) -> tuple[object, LiveBytes, LiveBytes]:
    whole, whole_probe = measured(lambda: run(0))
    chunked, chunked_probe = measured(lambda: run(CHUNK))
    assert_same(chunked, whole)
    one_iou_matrix = 2 * max(NUM_GTS) * num_priors * 4  # (N, G, R) float32
    assert whole_probe.peak > one_iou_matrix
    assert chunked_probe.peak < whole_probe.peak / 4
    for probe in (whole_probe, chunked_probe):
        assert not [op for op in probe.ops if op.startswith(SYNC_OPS)], probe.ops
    return chunked, whole_probe, chunked_probe


@pytest.mark.parametrize("gt_max_assign_all", [True, False])
def test_max_iou_chunked_equals_whole(gt_max_assign_all: bool) -> None:
    priors, _ = anchors([0.5, 1.0, 2.0], 4, 1)  # (R, 4) R = (1600 + 400 + 100 + 25) * 3
    gt_boxes, gt_labels, ignore, ignore_valid = crowded_batch()
    prior_valid = torch.ones(2, priors.shape[0], dtype=torch.bool)
    prior_valid[1, ::7] = False

    def run(chunk: int) -> AssignResult:
        assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0,
                                  gt_max_assign_all=gt_max_assign_all, ignore_iof_thr=0.5,
                                  gt_chunk_size=chunk)
        return assigner.assign(priors, gt_boxes, gt_labels, ignore, ignore_valid, prior_valid)

    result, _, _ = check(run, priors.shape[0])
    assert result.gt_index.max() >= 13 * CHUNK  # GT of the later chunks were matched too
    assert (result.gt_index[1] < NUM_GTS[1]).all()  # never a padding slot
    # slots 64 and 499 are one box: step 4 gives its best prior to the higher slot, 499
    assert (result.gt_index[0] == 499).sum() > 0


def test_atss_chunked_equals_whole() -> None:
    priors, levels = anchors([1.0], 8, 1)  # (R, 4) R = 1600 + 400 + 100 + 25
    gt_boxes, gt_labels, ignore, ignore_valid = crowded_batch()

    def run(chunk: int) -> AssignResult:
        assigner = ATSSAssigner(topk=9, ignore_iof_thr=0.5, gt_chunk_size=chunk)
        return assigner.assign(priors, gt_boxes, gt_labels, ignore, ignore_valid,
                               num_level_priors=levels)

    result, _, _ = check(run, priors.shape[0])
    assert result.gt_index.max() >= 13 * CHUNK
    # slots 7 and 40 are one box: every prior positive for it goes to the lower slot
    assert (result.gt_index[0] == 7).sum() > 0 and (result.gt_index[0] == 40).sum() == 0


@pytest.mark.parametrize("center_sampling", [False, True])
def test_fcos_targets_chunked_equal_whole(center_sampling: bool) -> None:
    generator = MlvlPointGenerator(strides=[8, 16, 32, 64, 128], offset=0.5)
    sizes = [(SIZE // s + (SIZE % s > 0), SIZE // s + (SIZE % s > 0)) for s in (8, 16, 32, 64, 128)]
    per_level = generator.grid_priors(sizes, with_stride=True)
    points = torch.cat(per_level)  # (R, 4): x, y, s_w, s_h
    ranges = per_point(torch.tensor([[-1, 64], [64, 128], [128, 256], [256, 512], [512, INF]]),
                       [p.shape[0] for p in per_level])
    gt_boxes, gt_labels, _, _ = crowded_batch()

    def run(chunk: int) -> PointTargets:
        return fcos_targets(points, points[:, 2:], ranges, gt_boxes, gt_labels, 5,
                            center_sampling=center_sampling, gt_chunk_size=chunk)

    result, _, _ = check(run, points.shape[0])
    assert result.gt_index.max() >= 13 * CHUNK
    # slots 64 and 499 are one box (equal areas): its points go to the lower slot
    assert (result.gt_index[0] == 64).sum() > 0 and (result.gt_index[0] == 499).sum() == 0


def test_ties_across_chunks_by_hand() -> None:
    """One GT slot per chunk, on the hand cases of test_max_iou_assigner / test_atss_assigner.

    MaxIoU: two identical GTs [0, 0, 10, 10] and priors P0 = the same box, P1 = [0, 0, 10, 1]:
    step 3 gives P0 to slot 0 (the first maximum, found in the first chunk), step 4 lets slot 1
    (second chunk) claim it; P1 (IoU 0.1) is negative. ATSS: GT A, then GT B: P0 is positive
    for both (IoU 1/2 and 0.64) and goes to B, in the second chunk; with B first, still to B.
    FCOS: a point inside a big and a small GT takes the small one, wherever it sits.
    """
    priors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 1]])
    gt = torch.tensor([[[0.0, 0, 10, 10], [0, 0, 10, 10]]])
    result = MaxIoUAssigner(gt_chunk_size=1).assign(priors, gt, torch.tensor([[1, 2]]))
    assert result.gt_index.tolist() == [[1, -1]] and result.labels.tolist() == [[2, -1]]
    step3_only = MaxIoUAssigner(gt_chunk_size=1, match_low_quality=False)
    assert step3_only.assign(priors, gt, torch.tensor([[1, 2]])).gt_index.tolist() == [[0, -1]]

    from tests.task.test_atss_assigner import GT_A, GT_B, LEVELS, PRIORS, batch

    for order, expect in (([(GT_A, 2), (GT_B, 0)], 1), ([(GT_B, 0), (GT_A, 2)], 0)):
        result = ATSSAssigner(topk=3, gt_chunk_size=1).assign(PRIORS, *batch(order),
                                                              num_level_priors=LEVELS)
        assert result.gt_index.tolist() == [[expect] + [-1] * 7]

    big, small = [0.0, 0, 40, 40], [10.0, 10, 30, 34]
    points = torch.tensor([[20.0, 20], [5, 5]])
    strides, ranges = torch.full((2, 2), 8.0), torch.tensor([[-1.0, INF]] * 2)
    for boxes, slot in (([big, small], 1), ([small, big], 0)):
        t = fcos_targets(points, strides, ranges, torch.tensor([boxes]), torch.tensor([[0, 2]]),
                         3, gt_chunk_size=1)
        assert t.gt_index.tolist() == [[slot, 1 - slot]]
        assert t.distances[0, 0].tolist() == [10, 10, 10, 14]  # to the small GT


def test_chunk_size_is_a_typed_config_key() -> None:
    from pydantic import ValidationError

    from detcli.models.dense_heads.fcos_head import FCOSHeadConfig
    from detcli.registry import ASSIGNERS
    from detcli.task.assigners import ATSSAssignerConfig, MaxIoUAssignerConfig

    assert MaxIoUAssignerConfig().gt_chunk_size == 32
    assert ASSIGNERS.build(MaxIoUAssignerConfig(gt_chunk_size=0)).gt_chunk_size == 0
    assert ASSIGNERS.build(ATSSAssignerConfig(gt_chunk_size=8)).gt_chunk_size == 8
    assert FCOSHeadConfig(num_classes=3, gt_chunk_size=16).gt_chunk_size == 16
    for config in (MaxIoUAssignerConfig, ATSSAssignerConfig):
        with pytest.raises(ValidationError, match="gt_chunk_size"):
            config(gt_chunk_size=-1)
