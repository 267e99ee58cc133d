"""det's Faster R-CNN against torchvision's, with the same weights (ResNet-18 + FPN, 3 classes).

torchvision is an independent implementation of the same network and post-processing: with
its weights converted (:mod:`detcli.models.torchvision_weights`), both must compute the same
features, RPN outputs, proposals and detections, up to the differences the converter's
docstring lists. Those are removed here where torchvision allows it: its base anchors are set
unrounded, and det's RoIAlign pools with ``aligned = False`` for the detection comparison.
(torchvision's level rule, floor(4 + log2(sqrt(area) / 224)) clamped to P2-P5, is
MMDetection's floor(log2(sqrt(area) / 56)) up to where the 1e-6 is added.)
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import MultiScaleRoIAlign, box_iou

from detcli.errors import CheckpointError
from detcli.models.build import build_detector
from detcli.models.torchvision_weights import faster_rcnn_from_torchvision
from detcli.structures.batch import ImageBatch
from detcli.structures.proposals import Proposals

SIZE = 128
OURS = {
    "type": "FasterRCNN",
    "backbone": {"type": "ResNet", "depth": 18, "frozen_stages": -1, "init_cfg": False},
    "neck": {"type": "FPN", "out_channels": 256, "num_outs": 5},
    "rpn_head": {"type": "RPNHead"},
    "roi_head": {"type": "StandardRoIHead",
                 "bbox_head": {"type": "Shared2FCBBoxHead", "num_classes": 3}},
    "train_cfg": False,
}


def unrounded(generator: AnchorGenerator) -> list[torch.Tensor]:
    """torchvision's cell anchors without its round(): w = size / sqrt(r), h = size * sqrt(r),
    centred on 0, as MMDetection's AnchorGenerator (centre offset 0) makes them."""
    cells = []
    for sizes, ratios in zip(generator.sizes, generator.aspect_ratios):
        scale = torch.tensor(sizes, dtype=torch.float32)  # (1,)
        root = torch.tensor(ratios, dtype=torch.float32).sqrt()  # (3,)
        widths, heights = (scale / root).reshape(-1), (scale * root).reshape(-1)  # (3,) each
        cells.append(torch.stack([-widths, -heights, widths, heights], dim=1) / 2)  # (3, 4)
    return cells


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    generator = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    generator.cell_anchors = unrounded(generator)
    theirs = FasterRCNN(
        _resnet_fpn_extractor(resnet18(), trainable_layers=5), num_classes=4,
        min_size=SIZE, max_size=SIZE, image_mean=[0.0] * 3, image_std=[1.0] * 3,
        rpn_anchor_generator=generator, box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 0),
        rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, box_score_thresh=0.05,
        box_nms_thresh=0.5, box_detections_per_img=100).eval()
    ours = build_detector(OURS).eval()
    ours.load_state_dict(faster_rcnn_from_torchvision(theirs.state_dict(), ours.state_dict()))
    images = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    return ours, theirs, images


@torch.no_grad()
def test_features_and_rpn_outputs_are_the_same(pair):
    ours, theirs, images = pair
    feats, rpn = ours(images)
    tv_feats = list(theirs.backbone(images).values())
    tv_logits, tv_deltas = theirs.rpn.head(tv_feats)
    assert len(feats) == len(tv_feats) == 5
    for a, b in zip(feats, tv_feats):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(rpn.cls_logits + rpn.bbox_deltas, tv_logits + tv_deltas):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_proposals_are_torchvisions(pair):
    ours, theirs, images = pair
    proposals = ours.predict_proposals(ImageBatch.from_tensor(images))
    image_list, _ = theirs.transform(list(images))
    tv_props, _ = theirs.rpn(image_list, theirs.backbone(images))
    for boxes, valid, tv_boxes in zip(proposals.boxes, proposals.valid, tv_props):
        mine = boxes[valid]
        # torchvision also drops boxes under 1e-3 px, det only empty ones: a few at most
        assert abs(len(mine) - len(tv_boxes)) <= 0.01 * len(tv_boxes)
        best = box_iou(mine, tv_boxes).max(dim=1).values  # (P,)
        assert (best > 0.999).float().mean() > 0.99
        # the 100 best are the same boxes in the same order
        torch.testing.assert_close(mine[:100], tv_boxes[:100], rtol=0, atol=1e-3)


@torch.no_grad()
def test_detections_from_the_same_proposals_are_torchvisions(pair):
    ours, theirs, images = pair
    image_list, _ = theirs.transform(list(images))
    tv_feats = theirs.backbone(images)
    tv_props, _ = theirs.rpn(image_list, tv_feats)
    tv_dets, _ = theirs.roi_heads(tv_feats, tv_props, image_list.image_sizes)

    slots = max(len(p) for p in tv_props)
    boxes = torch.zeros(2, slots, 4)
    valid = torch.zeros(2, slots, dtype=torch.bool)
    for i, props in enumerate(tv_props):
        boxes[i, :len(props)], valid[i, :len(props)] = props, True
    extractor = ours.roi_head.bbox_roi_extractor
    extractor.aligned = False  # torchvision's MultiScaleRoIAlign
    try:
        feats = ours.extract_feat(images)
        dets = ours.roi_head.predict(feats, Proposals(boxes, valid.float(), valid),
                                     ImageBatch.from_tensor(images), rescale=False)
    finally:
        extractor.aligned = True
    for i, tv in enumerate(tv_dets):
        num = int(dets.num_dets[i])
        assert num == len(tv["boxes"]) == 100  # random weights: every image fills its 100
        iou = box_iou(dets.boxes[i, :num], tv["boxes"])  # (100, 100)
        best, index = iou.max(dim=1)
        matched = best > 0.999
        assert matched.float().mean() >= 0.97  # torchvision drops boxes under 0.01 px
        assert torch.equal(dets.labels[i, :num][matched] + 1, tv["labels"][index[matched]])
        torch.testing.assert_close(dets.scores[i, :num][matched], tv["scores"][index[matched]],
                                   rtol=0, atol=1e-5)


def test_weights_of_another_class_count_are_refused(pair):
    ours, theirs, _ = pair
    state = dict(theirs.state_dict())
    state["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(6, 1024)
    state["roi_heads.box_predictor.cls_score.bias"] = torch.zeros(6)
    with pytest.raises(CheckpointError, match="2 of another shape"):
        faster_rcnn_from_torchvision(state, ours.state_dict())
