"""The mask branch of StandardRoIHead and the MaskRCNN detector: config wiring and checks, the
positive slots the mask loss reads, the shared-extractor variant, predictions with their mask
probabilities and pasted masks. (Values against MMDetection: test_mask_rcnn_vs_mmdet.py.)"""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError

from detcli.config.loader import load_config
from detcli.errors import ConfigError, DataError
from detcli.models.build import build_detector
from detcli.models.detectors import MaskRCNN, MaskRCNNConfig
from detcli.models.roi_heads import StandardRoIHead
from detcli.structures.batch import DetTargets, ImageBatch

SIZE = 64


_TINY: dict = {}


def tiny_model_cfg() -> dict:
    """mask_rcnn_tiny_synth's model as a dict (ResNet-18 quarter width, 64 channels), with a
    2-conv 16-channel mask head and fewer proposals and RoIs, so the tests run fast: 100
    proposals, 64 RoIs sampled per image, 16 of them positive at most."""
    if not _TINY:
        model = load_config("mask_rcnn_tiny_synth", []).resolved()["model"]
        model["roi_head"]["mask_head"].update(num_convs=2, conv_out_channels=16)
        model["train_cfg"]["rpn_proposal"].update(nms_pre=200, max_per_img=100)
        model["train_cfg"]["rcnn"]["sampler"]["num"] = 64
        model["test_cfg"]["rpn"].update(nms_pre=200, max_per_img=100)
        _TINY.update(model)
    return copy.deepcopy(_TINY)


def batch(with_masks: bool = True) -> tuple[ImageBatch, DetTargets]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, SIZE, SIZE, generator=gen)
    images = ImageBatch(tensor=x, img_shapes=[(SIZE, SIZE), (48, 56)],
                        ori_shapes=[(32, 32), (30, 35)],
                        scale_factors=torch.tensor([[2.0, 2.0, 2.0, 2.0],
                                                    [1.6, 1.6, 1.6, 1.6]]))
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 50.0]]),
             torch.tensor([[10.0, 8.0, 40.0, 30.0]])]
    masks = None
    if with_masks:
        masks = []
        for b in boxes:
            m = torch.zeros(len(b), SIZE, SIZE, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(b.long().tolist()):
                m[i, y1:y2, x1:x2] = 1
            masks.append(m)
    targets = DetTargets.from_lists(boxes, [torch.tensor([0, 2]), torch.tensor([1])],
                                    masks=masks, mask_shape=(SIZE, SIZE))
    return images, targets


def test_a_mask_head_needs_the_mask_rcnn_type():
    cfg = tiny_model_cfg()
    cfg["type"] = "FasterRCNN"
    del cfg["train_cfg"]["rcnn"]["mask_size"], cfg["test_cfg"]["rcnn"]["mask_thr_binary"]
    with pytest.raises(ConfigError, match='use type = "MaskRCNN"'):
        build_detector(cfg)


def test_mask_branch_channels_are_derived_from_the_neck_and_checked():
    model = build_detector(tiny_model_cfg())
    assert isinstance(model, MaskRCNN)
    assert model.roi_head.mask_head.in_channels == 64
    assert model.roi_head.mask_roi_extractor.out_channels == 64
    cfg = tiny_model_cfg()
    cfg["roi_head"]["mask_head"]["in_channels"] = 32
    with pytest.raises(ValidationError, match="mask_head.in_channels = 32 disagrees with 64"):
        MaskRCNNConfig.model_validate(cfg)
    cfg = tiny_model_cfg()
    cfg["roi_head"]["mask_head"]["roi_feat_size"] = 7
    with pytest.raises(ValidationError, match="mask_head.roi_feat_size = 7 disagrees"):
        MaskRCNNConfig.model_validate(cfg)


def test_a_mask_extractor_without_a_mask_head_is_refused():
    model = build_detector(tiny_model_cfg())
    head = model.roi_head
    with pytest.raises(ConfigError, match="mask_roi_extractor but no mask_head"):
        StandardRoIHead(bbox_roi_extractor=head.bbox_roi_extractor, bbox_head=head.bbox_head,
                        mask_roi_extractor=head.mask_roi_extractor)


def test_the_mask_loss_reads_the_positive_slots_and_needs_gt_masks():
    torch.manual_seed(0)
    model = build_detector(tiny_model_cfg())
    model.train()
    images, targets = batch()
    roi_head = model.roi_head
    assert roi_head.mask_slots(64) == 16  # RandomSampler num 64 x pos_fraction 0.25
    feats = model.extract_feat(images.tensor)
    proposals = model.rpn_head.predict_proposals(model.rpn_head(feats), images,
                                                 model.train_cfg.rpn_proposal)
    samples = roi_head.sample(proposals, targets)
    assert not samples.pos[:, roi_head.mask_slots(samples.pos.shape[1]):].any()
    losses = model.loss(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox", "acc",
                           "loss_mask"}
    assert 0 < losses["loss_mask"].item() < 5
    losses["loss_mask"].backward()
    assert model.roi_head.mask_head.conv_logits.weight.grad.abs().sum() > 0
    assert model.roi_head.bbox_head.fc_cls.weight.grad is None  # the mask loss alone
    _, no_masks = batch(with_masks=False)
    with pytest.raises(DataError, match="LoadAnnotations\\(with_mask = true\\)"):
        roi_head.mask_loss(feats, samples, no_masks)


def test_without_a_mask_extractor_the_box_extractor_is_shared():
    """MMDetection's share_roi_extractor: no mask_roi_extractor, the mask head reads the 7 x 7
    box features (roi_feat_size 7, masks 14 x 14, mask_size 14)."""
    cfg = tiny_model_cfg()
    del cfg["roi_head"]["mask_roi_extractor"]
    cfg["roi_head"]["mask_head"]["roi_feat_size"] = 7
    cfg["train_cfg"]["rcnn"]["mask_size"] = 14
    model = build_detector(cfg)
    assert model.roi_head.mask_roi_extractor is None
    assert not any(k.startswith("roi_head.mask_roi_extractor") for k in model.state_dict())
    model.train()
    assert model.loss(*batch())["loss_mask"].item() > 0
    wrong = copy.deepcopy(cfg)
    wrong["train_cfg"]["rcnn"]["mask_size"] = 28
    model = build_detector(wrong)
    model.train()
    with pytest.raises(ConfigError, match="predicts \\(14, 14\\) masks but "
                                          "train_cfg.rcnn.mask_size is 28"):
        model.loss(*batch())


@torch.no_grad()
def test_predictions_carry_mask_probs_and_pasted_masks():
    torch.manual_seed(0)
    cfg = tiny_model_cfg()
    cfg["test_cfg"]["rcnn"]["score_thr"] = 0.0  # an untrained model: keep what it finds
    model = build_detector(cfg)
    model.eval()
    images, _ = batch()
    rescaled = model.predict_batch(images, rescale=True)
    unscaled = model.predict_batch(images, rescale=False)
    num_slots = model.test_cfg.rcnn.max_per_img
    assert rescaled.mask_probs.shape == (2, num_slots, 28, 28)
    counts = rescaled.num_dets.tolist()
    assert min(counts) > 0
    for i, count in enumerate(counts):
        assert rescaled.mask_probs[i, count:].abs().sum() == 0
        assert (rescaled.mask_probs[i, :count] > 0).all()
    # the same detections; boxes divided by the scale factors after NMS
    torch.testing.assert_close(rescaled.boxes, unscaled.boxes / images.scale_factors[:, None])
    torch.testing.assert_close(rescaled.mask_probs, unscaled.mask_probs)
    dets = model.predict(images, rescale=True)
    assert [tuple(d.masks.shape[1:]) for d in dets] == [(32, 32), (30, 35)]
    plain = model.predict(images, rescale=False)  # round(ori * scale): (64, 64), (48, 56)
    assert [tuple(d.masks.shape[1:]) for d in plain] == [(64, 64), (48, 56)]
    assert MaskRCNN.paste_sizes(images, rescale=False) == [(64, 64), (48, 56)]
