"""det's Mask R-CNN mask branch against torchvision's, with the same weights (ResNet-18 + FPN,
3 classes): converted by :func:`detcli.models.torchvision_weights.mask_rcnn_from_torchvision`,
loaded strictly, the two compute the same mask probabilities for the same boxes once det's mask
RoIAlign pools as torchvision's does (``sampling_ratio = 2``, ``aligned = false``)."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.detection import MaskRCNN as TorchvisionMaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

from detcli.errors import CheckpointError
from detcli.models.build import build_detector
from detcli.models.torchvision_weights import mask_rcnn_from_torchvision, select_classes

SIZE = 128
EXTRACTOR = {"type": "SingleRoIExtractor", "featmap_strides": [4, 8, 16, 32]}
OURS = {
    "type": "MaskRCNN",
    "backbone": {"type": "ResNet", "depth": 18, "frozen_stages": -1, "init_cfg": False},
    "neck": {"type": "FPN", "out_channels": 256, "num_outs": 5},
    "rpn_head": {"type": "RPNHead"},
    "roi_head": {
        "type": "StandardRoIHead",
        "bbox_head": {"type": "Shared2FCBBoxHead", "num_classes": 3},
        # torchvision's mask MultiScaleRoIAlign: 2 x 2 samples per bin, not aligned
        "mask_roi_extractor": {**EXTRACTOR, "roi_layer": {"output_size": 14, "sampling_ratio": 2,
                                                          "aligned": False}},
        "mask_head": {"type": "FCNMaskHead", "num_classes": 3},
    },
    "train_cfg": False,
}


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    theirs = TorchvisionMaskRCNN(_resnet_fpn_extractor(resnet18(), trainable_layers=5),
                                 num_classes=4, min_size=SIZE, max_size=SIZE,
                                 image_mean=[0.0] * 3, image_std=[1.0] * 3).eval()
    with torch.no_grad():  # non-zero biases, so a dropped or misplaced channel shows
        for name, param in theirs.roi_heads.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.5)
    ours = build_detector(OURS).eval()
    ours.load_state_dict(mask_rcnn_from_torchvision(theirs.state_dict(), ours.state_dict()),
                         strict=True)
    return ours, theirs


@torch.no_grad()
def test_mask_probabilities_for_the_same_boxes_are_torchvisions(pair):
    ours, theirs = pair
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    xy = torch.rand(2, 6, 2, generator=gen) * 60
    boxes = torch.cat([xy, xy + 8 + torch.rand(2, 6, 2, generator=gen) * 60], dim=-1)  # (2, 6, 4)
    labels = torch.randint(1, 4, (2, 6), generator=gen)  # torchvision's: 1..3
    tv_feats = theirs.backbone(images)
    pooled = theirs.roi_heads.mask_roi_pool(tv_feats, list(boxes), [(SIZE, SIZE)] * 2)
    tv_logits = theirs.roi_heads.mask_predictor(theirs.roi_heads.mask_head(pooled))  # (12, 4, ..)
    flat = labels.reshape(-1)
    tv_probs = tv_logits[torch.arange(12), flat].sigmoid()  # (12, 28, 28)

    feats = ours.extract_feat(images)
    rois = torch.cat([torch.arange(2.0).repeat_interleave(6)[:, None], boxes.reshape(-1, 4)], 1)
    logits = ours.roi_head.mask_forward(feats, rois)  # (12, 3, 28, 28)
    probs = ours.roi_head.mask_head.class_probs(logits, flat - 1)  # det's labels: 0..2
    torch.testing.assert_close(probs, tv_probs, rtol=1e-4, atol=1e-5)


def test_mask_logits_follow_the_picked_classes():
    """select_classes picks the mask logit channels with the box predictor's rows: a dataset of
    (category 3, category 1) gets channels background, 3, 1; conversion drops the background."""
    state = {"roi_heads.box_predictor.cls_score.weight": torch.arange(4.0)[:, None],
             "roi_heads.box_predictor.cls_score.bias": torch.arange(4.0),
             "roi_heads.box_predictor.bbox_pred.weight": torch.zeros(16, 1),
             "roi_heads.box_predictor.bbox_pred.bias": torch.zeros(16),
             "roi_heads.mask_predictor.mask_fcn_logits.weight": torch.arange(4.0)[:, None, None,
                                                                               None],
             "roi_heads.mask_predictor.mask_fcn_logits.bias": torch.arange(4.0) * 10}
    picked, _ = select_classes(state, ["__background__", "a", "b", "c"], ["c", "a"])
    assert picked["roi_heads.mask_predictor.mask_fcn_logits.bias"].tolist() == [0.0, 30.0, 10.0]
    dropped, notes = select_classes(state, ["__background__", "a", "b", "c"], ["zebra"])
    assert not any(k.startswith("roi_heads.mask_predictor") for k in dropped)
    assert "zebra" in notes[0]


def test_a_mask_head_of_another_shape_is_refused(pair):
    ours, theirs = pair
    state = dict(theirs.state_dict())
    state["roi_heads.mask_predictor.mask_fcn_logits.weight"] = torch.zeros(6, 256, 1, 1)
    with pytest.raises(CheckpointError, match="mask head does not fit"):
        mask_rcnn_from_torchvision(state, ours.state_dict())
