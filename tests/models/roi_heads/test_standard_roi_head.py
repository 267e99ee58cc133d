"""StandardRoIHead: config wiring, proposal sampling into fixed slots, the loss (padding counts
for nothing), prediction on a hand-built case, and a few training steps.

The sampling case, K = 3 classes, one 128 x 128 image, GT A [0, 0, 20, 20] class 1 and
GT B [50, 50, 70, 70] class 2, ten proposals:
  p0 [0, 0, 20, 20]    IoU 1 with A                       positive (A)
  p1 [0, 0, 20, 16]    IoU 320 / 400 = 0.8 with A          positive (A)
  p2 [50, 50, 70, 66]  IoU 0.8 with B                      positive (B)
  p3..p9  10 x 10 squares at x = 100..106, y = 100: IoU 0   negative
and an eleventh, padding slot [0, 0, 20, 18] (IoU 0.9 with A, but valid = False).
The R-CNN assigner (pos >= 0.5, neg < 0.5) gives 3 positive and 7 negative candidates.
Deltas (stds 0.1, 0.1, 0.2, 0.2): p0 -> A is 0; p1 (centre (10, 8), 20 x 16) -> A (centre
(10, 10), 20 x 20): dy = 2 / 16 / 0.1 = 1.25, dh = log(20 / 16) / 0.2 = 1.115718; p2 -> B the
same by symmetry.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from detcli.errors import DetError
from detcli.models.roi_heads import (
    Shared2FCBBoxHead,
    Shared2FCBBoxHeadConfig,
    SingleRoIExtractor,
    SingleRoIExtractorConfig,
    StandardRoIHead,
    StandardRoIHeadConfig,
    batch_rois,
)
from detcli.models.roi_heads.standard_roi_head import trim_padding
from detcli.registry import ROI_HEADS
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.proposals import Proposals
from detcli.task.postprocess import SoftNMSConfig
from detcli.task.samplers.random_sampler import RandomSamplerConfig
from detcli.task.two_stage_cfg import RCNNTestConfig, RCNNTrainConfig

GT_A, GT_B = [0.0, 0.0, 20.0, 20.0], [50.0, 50.0, 70.0, 70.0]
PROPOSALS = [GT_A, [0.0, 0.0, 20.0, 16.0], [50.0, 50.0, 70.0, 66.0]] + [
    [100.0 + k, 100.0, 110.0 + k, 110.0] for k in range(7)]
PADDING = [0.0, 0.0, 20.0, 18.0]
P1_DELTAS = [0.0, 1.25, 0.0, math.log(20 / 16) / 0.2]


def toy_head(num: int = 8, pos_fraction: float = 0.25, add_gt: bool = False,
             channels: int = 2, fc_out: int = 8, **test_cfg: object) -> StandardRoIHead:
    sampler = RandomSamplerConfig(num=num, pos_fraction=pos_fraction,
                                  add_gt_as_proposals=add_gt)
    return StandardRoIHead(
        bbox_roi_extractor=SingleRoIExtractor(featmap_strides=[4, 8]),
        bbox_head=Shared2FCBBoxHead(num_classes=3, in_channels=channels, roi_feat_size=7,
                                    fc_out_channels=fc_out),
        train_cfg=RCNNTrainConfig(sampler=sampler),
        test_cfg=RCNNTestConfig(**test_cfg))


def proposals_of(*images: list[list[float]], valid: list[list[bool]] | None = None) -> Proposals:
    """Per-image box lists padded with zero boxes to one P; ``valid`` defaults to the lists."""
    size = max(len(b) for b in images)
    boxes = torch.zeros(len(images), size, 4)
    mask = torch.zeros(len(images), size, dtype=torch.bool)
    for i, image in enumerate(images):
        boxes[i, :len(image)] = torch.tensor(image)
        if valid is None:
            mask[i, :len(image)] = True
        else:
            mask[i, :len(valid[i])] = torch.tensor(valid[i])
    scores = torch.linspace(1, 0.1, size).expand(len(images), -1) * mask
    return Proposals(boxes, scores, mask)


def case_targets() -> DetTargets:
    return DetTargets.from_lists([torch.tensor([GT_A, GT_B])], [torch.tensor([1, 2])])


def features(num_images: int, channels: int = 2, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(num_images, channels, 128 // s, 128 // s, generator=gen) for s in (4, 8)]


def images_of(num_images: int, scale: float = 1.0) -> ImageBatch:
    images = ImageBatch.from_tensor(torch.zeros(num_images, 3, 128, 128))
    images.img_shapes = torch.tensor([[100, 100]] * num_images)  # (N, 2)
    images.scale_factors = torch.full((num_images, 4), scale)
    return images


def as_rows(boxes: torch.Tensor) -> list[list[float]]:
    return [[round(v, 4) for v in row] for row in boxes.tolist()]


# ---- config ----------------------------------------------------------------------------------

def test_config_defaults_derivation_and_size_check() -> None:
    cfg = StandardRoIHeadConfig(bbox_head=Shared2FCBBoxHeadConfig(num_classes=80))
    assert cfg.bbox_roi_extractor.featmap_strides == [4, 8, 16, 32]
    assert cfg.bbox_roi_extractor.out_channels is None and cfg.bbox_head.in_channels is None
    cfg.connect(256, "model.neck (FPN out_channels 256)", "model.roi_head")
    assert cfg.bbox_roi_extractor.out_channels == 256 and cfg.bbox_head.in_channels == 256
    assert cfg.bbox_head._derived == {"in_channels": "model.roi_head.bbox_roi_extractor.out_channels"}
    head = ROI_HEADS.build(cfg, train_cfg=RCNNTrainConfig(), test_cfg=RCNNTestConfig())
    assert isinstance(head, StandardRoIHead) and head.num_classes == 80
    assert head.bbox_roi_extractor.out_channels == 256 and head.bbox_head.in_channels == 256
    assert head.sampler.num == 512 and head.assigner.pos_iou_thr == 0.5
    keys = set(head.state_dict())
    assert {"bbox_head.shared_fcs.0.weight", "bbox_head.fc_cls.bias", "bbox_head.fc_reg.weight"} \
        <= keys and len(keys) == 8

    extractor = {"type": "SingleRoIExtractor", "featmap_strides": [4, 8], "out_channels": 64}
    derived = StandardRoIHeadConfig(bbox_roi_extractor=extractor,
                                    bbox_head={"type": "Shared2FCBBoxHead", "num_classes": 3})
    assert derived.bbox_head.in_channels == 64
    with pytest.raises(ValidationError, match="in_channels = 32 disagrees with 64"):
        StandardRoIHeadConfig(bbox_roi_extractor=extractor, bbox_head={
            "type": "Shared2FCBBoxHead", "num_classes": 3, "in_channels": 32})
    with pytest.raises(ValidationError, match=r"bbox_head\.roi_feat_size = 7 disagrees with "
                                              r".*bbox_roi_extractor\.roi_layer\.output_size"):
        StandardRoIHeadConfig(
            bbox_roi_extractor={**extractor, "roi_layer": {"output_size": 14}},
            bbox_head={"type": "Shared2FCBBoxHead", "num_classes": 3})
    assert StandardRoIHeadConfig(  # a pair equal to the head's size is fine
        bbox_roi_extractor=SingleRoIExtractorConfig(featmap_strides=[4],
                                                    roi_layer={"output_size": [5, 5]}),
        bbox_head={"type": "Shared2FCBBoxHead", "num_classes": 3, "roi_feat_size": 5})


# ---- sampling --------------------------------------------------------------------------------

def test_sample_hand_case_two_positives_six_negatives() -> None:
    head = toy_head(num=8, pos_fraction=0.25)
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        s = head.sample(proposals_of(PROPOSALS), case_targets(), generator=gen)
        assert s.rois.shape == (1, 8, 4)
        assert s.pos[0].tolist() == [True] * 2 + [False] * 6
        assert s.valid.all() and not s.gt_flags.any()
        rows = as_rows(s.rois[0])
        assert set(map(tuple, rows[:2])) <= set(map(tuple, PROPOSALS[:3]))
        assert set(map(tuple, rows[2:])) <= set(map(tuple, PROPOSALS[3:]))
        assert s.labels[0, 2:].tolist() == [3] * 6 and s.gt_index[0, 2:].tolist() == [-1] * 6
        assert s.label_weights[0].tolist() == [1.0] * 8
        assert s.bbox_weights[0].tolist() == [1.0] * 2 + [0.0] * 6
        assert torch.all(s.bbox_targets[0, 2:] == 0)
        for slot in range(2):
            index = PROPOSALS.index(rows[slot])
            gt, label = (0, 1) if index < 2 else (1, 2)
            assert s.gt_index[0, slot] == gt and s.labels[0, slot] == label
            expected = [0.0] * 4 if index == 0 else P1_DELTAS
            assert torch.allclose(s.bbox_targets[0, slot], torch.tensor(expected), atol=1e-5)
            assert s.iou[0, slot].item() == pytest.approx(1.0 if index == 0 else 0.8)
        assert s.num_pos.tolist() == [2] and s.num_sampled.tolist() == [8]


def test_sample_gt_as_proposals_padding_and_short_images() -> None:
    # pos_fraction 1 and num 16: every candidate is taken: 2 GT + 3 positive proposals, then
    # 7 negatives, then 4 padding slots. The padding proposal slot (IoU 0.9) is never taken.
    head = toy_head(num=16, pos_fraction=1.0, add_gt=True)
    props = proposals_of(PROPOSALS + [PADDING], valid=[[True] * 10 + [False]])
    s = head.sample(props, case_targets())
    assert s.rois.shape == (1, 16, 4)
    assert s.valid[0].tolist() == [True] * 12 + [False] * 4
    assert s.pos[0].tolist() == [True] * 5 + [False] * 11
    assert s.gt_flags[0].tolist() == [True] * 2 + [False] * 14
    # candidate order kept within each group: GT first, then proposals by score
    assert as_rows(s.rois[0, :12]) == [GT_A, GT_B] + PROPOSALS
    assert s.labels[0].tolist() == [1, 2, 1, 1, 2] + [3] * 11
    assert s.gt_index[0].tolist() == [0, 1, 0, 0, 1] + [-1] * 11
    assert s.iou[0, :5].tolist() == pytest.approx([1, 1, 1, 0.8, 0.8])
    assert torch.all(s.bbox_targets[0, :3] == 0)  # GT on itself, p0 == A
    assert torch.allclose(s.bbox_targets[0, 3:5], torch.tensor([P1_DELTAS] * 2), atol=1e-5)
    assert s.label_weights[0].tolist() == [1.0] * 12 + [0.0] * 4
    assert torch.all(s.rois[0, 12:] == 0) and torch.all(s.bbox_weights[0, 5:] == 0)

    # random draws never take the padding slot either
    head = toy_head(num=4, pos_fraction=0.5)
    for seed in range(10):
        s = head.sample(props, case_targets(), generator=torch.Generator().manual_seed(seed))
        assert PADDING not in as_rows(s.rois[0]) and s.pos.sum() == 2


def test_two_images_batched_equal_each_alone() -> None:
    other = [[30.0, 30.0, 60.0, 60.0], [30.0, 30.0, 60.0, 55.0], [0.0, 80.0, 10.0, 90.0]]
    other_targets = DetTargets.from_lists([torch.tensor([[30.0, 30, 60, 60]])],
                                          [torch.tensor([0])])
    both = DetTargets.from_lists([torch.tensor([GT_A, GT_B]), torch.tensor([[30.0, 30, 60, 60]])],
                                 [torch.tensor([1, 2]), torch.tensor([0])])
    # every candidate fits: the result is deterministic, so it must match exactly
    head = toy_head(num=16, pos_fraction=1.0, add_gt=True)
    batched = head.sample(proposals_of(PROPOSALS, other), both)
    alone = [head.sample(proposals_of(PROPOSALS), case_targets()),
             head.sample(proposals_of(other), other_targets)]
    for name in ("rois", "valid", "pos", "gt_flags", "labels", "label_weights", "bbox_targets",
                 "bbox_weights", "gt_index", "iou"):
        for i in range(2):
            assert torch.equal(getattr(batched, name)[i], getattr(alone[i], name)[0]), name
    assert batched.valid.sum(dim=1).tolist() == [12, 4]  # 3 + 1 GT-added positives, 0 + 2 ...
    assert batched.num_pos.tolist() == [5, 3]
    # a random draw: the same counts per image as alone
    head = toy_head(num=6, pos_fraction=0.5, add_gt=True)
    batched = head.sample(proposals_of(PROPOSALS, other), both)
    assert batched.num_pos.tolist() == [3, 3] and batched.num_sampled.tolist() == [6, 4]


def test_sample_without_gt_is_all_negative() -> None:
    head = toy_head(num=8, pos_fraction=0.25, add_gt=True)
    empty = DetTargets.from_lists([torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.long)])
    s = head.sample(proposals_of(PROPOSALS), empty)
    assert not s.pos.any() and s.valid.sum() == 8 and torch.all(s.labels == 3)
    assert torch.all(s.bbox_targets == 0) and torch.isfinite(s.bbox_targets).all()


# ---- loss ------------------------------------------------------------------------------------

def test_loss_ignores_padding_slots() -> None:
    head = toy_head(num=16, pos_fraction=1.0, add_gt=True)
    props = proposals_of(PROPOSALS + [PADDING], valid=[[True] * 10 + [False]])
    feats = features(1)
    out = head.loss(feats, props, images_of(1), case_targets())
    assert set(out) == {"loss_cls", "loss_bbox", "acc"}

    # the same by hand on the 12 sampled RoIs only (every candidate is taken: no randomness)
    s = head.sample(props, case_targets())
    valid = s.valid[0]
    cls_score, bbox_pred = head.bbox_forward(feats, batch_rois(s.rois[:, valid]))  # (12, ...)
    labels = s.labels[0, valid]
    expected_cls = F.cross_entropy(cls_score, labels)  # mean over the 12
    pos = labels < 3
    chosen = bbox_pred.view(12, 3, 4)[pos, labels[pos]]  # (5, 4) the GT classes' deltas
    expected_bbox = (chosen - s.bbox_targets[0, valid][pos]).abs().sum() / 12
    expected_acc = (cls_score.argmax(1) == labels).float().mean() * 100
    assert out["loss_cls"].item() == pytest.approx(expected_cls.item(), rel=1e-5)
    assert out["loss_bbox"].item() == pytest.approx(expected_bbox.item(), rel=1e-5)
    assert out["acc"].item() == pytest.approx(expected_acc.item(), rel=1e-5)


def test_loss_needs_train_cfg_and_runs_under_autocast() -> None:
    head = toy_head()
    head.train_cfg = head.assigner = head.sampler = None
    with pytest.raises(DetError, match="train_cfg"):
        head.loss(features(1), proposals_of(PROPOSALS), images_of(1), case_targets())
    head = toy_head()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head.loss([f.bfloat16() for f in features(1)], proposals_of(PROPOSALS),
                        images_of(1), case_targets())
    assert out["loss_cls"].dtype == torch.float32 and torch.isfinite(out["loss_bbox"])


def test_sgd_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    head = toy_head(num=16, pos_fraction=0.25, add_gt=True, channels=4, fc_out=32)
    feats = features(1, channels=4, seed=3)
    jitter = torch.randn(20, 4, generator=torch.Generator().manual_seed(4)) * 2
    boxes = torch.tensor([GT_A, GT_B] * 10) + jitter
    props = proposals_of(boxes.tolist() + PROPOSALS[3:])
    optimizer = torch.optim.SGD(head.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(25):
        torch.manual_seed(1)  # the same sampled RoIs every step
        out = head.loss(feats, props, images_of(1), case_targets())
        total = out["loss_cls"] + out["loss_bbox"]
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ---- prediction ------------------------------------------------------------------------------

def constant_head(**test_cfg: object) -> StandardRoIHead:
    """Every RoI gets logits (ln 6, ln 2, ln 1, ln 1): scores 0.6, 0.2, 0.1 (background 0.1);
    deltas 0 except class 1's dx = 1 (a shift of 0.1 * RoI width)."""
    head = toy_head(**test_cfg)
    box_head = head.bbox_head
    with torch.no_grad():
        for layer in (*box_head.shared_fcs, box_head.fc_cls, box_head.fc_reg):
            layer.weight.zero_()
            layer.bias.zero_()
        box_head.fc_cls.bias.copy_(torch.tensor([6.0, 2.0, 1.0, 1.0]).log())
        box_head.fc_reg.bias[4] = 1.0
    return head


def half(box: list[float]) -> tuple[float, ...]:
    return tuple(round(v / 2, 3) for v in box)


def shift(box: list[float]) -> list[float]:
    return [box[0] + 2, box[1], box[2] + 2, box[3]]


def detections(result: object, image: int) -> set[tuple]:
    count = int(result.num_dets[image])
    return {(int(label), round(float(score), 4), tuple(round(v, 3) for v in box))
            for box, score, label in zip(result.boxes[image, :count].tolist(),
                                         result.scores[image, :count].tolist(),
                                         result.labels[image, :count].tolist())}


def test_predict_hand_case() -> None:
    # image 0: p0 [10, 10, 30, 30] (w 20), p1 [50, 50, 70, 90] (w 20), an invalid p2; image 1:
    # only invalid slots. Scale factor 2: boxes are halved with rescale. Class 1 boxes move by
    # 0.1 * 20 = 2 px. No two boxes of one class overlap: NMS keeps all 6 of image 0.
    head = constant_head()
    p0, p1 = [10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 70.0, 90.0]
    props = proposals_of([p0, p1, [0.0, 0.0, 40.0, 40.0]], [p0, p1],
                         valid=[[True, True, False], [False, False]])
    expected = {(0, 0.6, half(p0)), (0, 0.6, half(p1)), (1, 0.2, half(shift(p0))),
                (1, 0.2, half(shift(p1))), (2, 0.1, half(p0)), (2, 0.1, half(p1))}
    out = head.predict(features(2), props, images_of(2, scale=2.0))
    assert out.boxes.shape == (2, 100, 4) and out.num_dets.tolist() == [6, 0]
    assert detections(out, 0) == expected
    assert out.scores[0, :6].tolist() == pytest.approx([0.6, 0.6, 0.2, 0.2, 0.1, 0.1])
    assert torch.all(out.labels[1] == -1) and torch.all(out.labels[0, 6:] == -1)

    no_rescale = head.predict(features(2), props, images_of(2, scale=2.0), rescale=False)
    assert (0, 0.6, tuple(p0)) in detections(no_rescale, 0)

    capped = constant_head(max_per_img=3, score_thr=0.15)
    out = capped.predict(features(2), props, images_of(2, scale=2.0))
    assert out.boxes.shape == (2, 3, 4) and out.num_dets.tolist() == [3, 0]
    assert detections(out, 0) < {d for d in expected if d[1] > 0.15}
    assert out.scores[0].tolist() == pytest.approx([0.6, 0.6, 0.2])

    soft = constant_head(nms=SoftNMSConfig(method="linear"))
    out = soft.predict(features(2), props, images_of(2, scale=2.0))
    assert detections(out, 0) == expected  # nothing overlaps within a class: no decay


def test_predict_suppresses_overlaps_within_a_class_only() -> None:
    # p0 and p0 moved by 1 px (IoU 380 / 420 = 0.90 > 0.5): class by class the second is
    # dropped, so each class keeps one box: 3 detections.
    head = constant_head()
    p0 = [10.0, 10.0, 30.0, 30.0]
    props = proposals_of([p0, [11.0, 10.0, 31.0, 30.0]])
    out = head.predict(features(1), props, images_of(1))
    assert out.num_dets.tolist() == [3]
    assert sorted(out.labels[0, :3].tolist()) == [0, 1, 2]


def test_predict_without_proposal_slots() -> None:
    empty = Proposals(torch.zeros(2, 0, 4), torch.zeros(2, 0),
                      torch.zeros(2, 0, dtype=torch.bool))
    out = constant_head().predict(features(2), empty, images_of(2))
    assert out.boxes.shape == (2, 100, 4) and out.num_dets.tolist() == [0, 0]


def test_trim_padding_keeps_every_slot_up_to_the_last_valid_one() -> None:
    # image 0 has valid slots 0 and 2 (a hole at 1), image 1 only slot 0: slots 3-5 are unused
    valid = torch.tensor([[True, False, True, False, False, False],
                          [True, False, False, False, False, False]])
    boxes = torch.arange(2 * 6 * 4, dtype=torch.float32).view(2, 6, 4)
    trimmed = trim_padding(Proposals(boxes, valid.float(), valid))
    assert trimmed.boxes.shape == (2, 3, 4)
    assert torch.equal(trimmed.boxes, boxes[:, :3]) and torch.equal(trimmed.valid, valid[:, :3])
    none_valid = trim_padding(Proposals(boxes, torch.zeros(2, 6), torch.zeros_like(valid)))
    assert none_valid.boxes.shape == (2, 1, 4)  # one slot left: shapes stay non-empty
    full = Proposals(boxes, torch.ones(2, 6), torch.ones_like(valid))
    assert trim_padding(full) is full


def test_predict_runs_the_box_head_on_used_slots_only_with_the_same_detections() -> None:
    # 3 valid proposals in 40 slots: the box head sees 3 RoIs, and the detections are those of
    # the same 3 proposals given without padding
    head = constant_head()
    seen: list[int] = []
    head.bbox_head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    boxes = [[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 70.0, 90.0], [60.0, 10.0, 80.0, 40.0]]
    padded = proposals_of(boxes + [[0.0, 0.0, 0.0, 0.0]] * 37, valid=[[True] * 3 + [False] * 37])
    out = head.predict(features(1), padded, images_of(1))
    ref = head.predict(features(1), proposals_of(boxes), images_of(1))
    assert seen == [3, 3]
    assert out.num_dets.tolist() == ref.num_dets.tolist() == [9]  # 3 boxes x 3 classes
    assert torch.equal(out.boxes, ref.boxes) and torch.equal(out.scores, ref.scores)
