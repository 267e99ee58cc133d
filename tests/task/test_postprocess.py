"""multiclass_nms over a batch, and the dense head's test-time config.

Box 0 [0,0,10,10] and box 1 [0,0,10,9]: IoU 90/100 = 0.9.
Box 0 and box 2 [1,1,11,11]: IoU 81/119 = 0.680672.  Box 1 and box 2: 72/118 = 0.610169.
"""

import pytest
import torch
from pydantic import ValidationError

from detcli.task.postprocess import DenseTestConfig, NMSConfig, SoftNMSConfig, multiclass_nms

BOXES = torch.tensor([[0., 0., 10., 10.], [0., 0., 10., 9.], [1., 1., 11., 11.]])
SCORES = torch.tensor([0.9, 0.8, 0.7])
LABELS = torch.tensor([0, 1, 0])


def test_class_aware_vs_agnostic():
    keep, scores = multiclass_nms(BOXES, SCORES, LABELS, None, NMSConfig(iou_threshold=0.5))
    assert keep.tolist() == [0, 1]  # class 0: box 2 suppressed by box 0; class 1: box 1 alone
    assert scores.tolist() == pytest.approx([0.9, 0.8])
    agnostic = NMSConfig(iou_threshold=0.5, class_agnostic=True)
    keep, _ = multiclass_nms(BOXES, SCORES, LABELS, None, agnostic)
    assert keep.tolist() == [0]


def test_grouped_by_image_without_cross_suppression():
    boxes = torch.cat([BOXES, BOXES])
    scores = torch.tensor([0.5, 0.4, 0.3, 0.9, 0.8, 0.7])  # image 1 scores higher
    labels = torch.cat([LABELS, LABELS])
    group = torch.tensor([0, 0, 0, 1, 1, 1])
    keep, kept = multiclass_nms(boxes, scores, labels, group, NMSConfig(iou_threshold=0.5))
    assert keep.tolist() == [0, 1, 3, 4]  # image 0 first, by score within each image
    assert kept.tolist() == pytest.approx([0.5, 0.4, 0.9, 0.8])
    keep, _ = multiclass_nms(boxes, scores, labels, group, NMSConfig(iou_threshold=0.5),
                             max_per_img=1)
    assert keep.tolist() == [0, 3]


def test_soft_nms_rescores():
    cfg = SoftNMSConfig(iou_threshold=0.3, method="linear", class_agnostic=True)
    keep, scores = multiclass_nms(BOXES, SCORES, LABELS, None, cfg)
    # pick 0: 1 -> 0.8 * 0.1 = 0.08, 2 -> 0.7 * (1 - 0.680672) = 0.223529
    # pick 2: 1 -> 0.08 * (1 - 0.610169) = 0.031186
    assert keep.tolist() == [0, 2, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.223529, 0.031186], abs=1e-6)
    keep, scores = multiclass_nms(BOXES, SCORES, LABELS, None, cfg.model_copy(
        update={"class_agnostic": False}))
    assert keep.tolist() == [0, 1, 2]  # box 1 is alone in class 1
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.223529], abs=1e-6)


def test_empty_input():
    none = torch.zeros(0, dtype=torch.long)
    keep, scores = multiclass_nms(torch.zeros(0, 4), torch.zeros(0), none, none, NMSConfig(), 100)
    assert keep.numel() == 0 and scores.numel() == 0


def test_dense_test_config():
    cfg = DenseTestConfig()
    assert (cfg.nms_pre, cfg.min_bbox_size, cfg.score_thr, cfg.max_per_img) == (1000, 0, 0.05, 100)
    assert cfg.nms == NMSConfig(iou_threshold=0.5, class_agnostic=False)
    soft = DenseTestConfig.model_validate({"nms": {"type": "soft_nms", "method": "gaussian"}})
    assert isinstance(soft.nms, SoftNMSConfig)
    assert (soft.nms.iou_threshold, soft.nms.sigma, soft.nms.min_score) == (0.3, 0.5, 1e-3)
    assert SoftNMSConfig().method == "linear"
    with pytest.raises(ValidationError, match="'nms', 'soft_nms'"):
        DenseTestConfig.model_validate({"nms": {"type": "softnms"}})
    with pytest.raises(ValidationError, match="method"):
        SoftNMSConfig(method="hard")
    with pytest.raises(ValidationError):
        DenseTestConfig(score_thr=1.5)


def test_batch_equals_per_image_torchvision_loop():
    import torchvision

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g) * 60 + 2], dim=1)
    scores = torch.rand(300, generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    group = torch.randint(0, 3, (300,), generator=g)
    keep, kept = multiclass_nms(boxes, scores, labels, group, NMSConfig(iou_threshold=0.5))
    for image in range(3):
        members = torch.nonzero(group == image).squeeze(1)
        ref = members[torchvision.ops.batched_nms(boxes[members], scores[members],
                                                  labels[members], 0.5)]
        ours = keep[group[keep] == image]
        assert ours.tolist() == ref.tolist()
    assert torch.equal(kept, scores[keep])
