"""det's RetinaNet (v1 and v2 layouts) and FCOS against torchvision's, with the same weights.

torchvision's own constructors with random weights (``weights=None, weights_backbone=None``,
ResNet-50, offline), 3 categories plus the background row torchvision keeps; the classifier
rows are picked by name (:func:`select_dense_classes`) and converted
(:func:`dense_from_torchvision`), det's model loads them strictly, and both detect on the same
two 128 x 128 images. Differences the converter documents are removed on torchvision's side
where it allows: its images are not normalised inside the model (mean 0, std 1: they already
are), RetinaNet's cell anchors are set to det's unrounded sizes, and its background row never
fires (bias -30; the COCO weights never score it either). Tolerances: features 1e-4, matched
boxes IoU > 0.999 and scores 1e-5 (FCOS: det's score is torchvision's squared).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models.detection import (
    fcos_resnet50_fpn,
    retinanet_resnet50_fpn,
    retinanet_resnet50_fpn_v2,
)
from torchvision.ops import box_iou

from detcli.errors import CheckpointError
from detcli.models.build import build_detector
from detcli.models.torchvision_dense import (
    FCOS,
    RETINANET,
    dense_from_torchvision,
    select_dense_classes,
)
from detcli.structures.batch import ImageBatch

SIZE = 128
CATEGORIES = ["__background__", "person", "car", "dog"]
CLASSES = ["dog", "person", "car"]  # det's label k is torchvision's TV_LABEL[k]
TV_LABEL = torch.tensor([3, 1, 2])
BACKBONE = {"type": "ResNet", "depth": 50, "frozen_stages": -1, "init_cfg": False}
TEST_CFG = {"nms_pre": 1000, "min_bbox_size": 0, "score_thr": 0.05,
            "nms": {"type": "nms", "iou_threshold": 0.5}, "max_per_img": 100}


def fpn(extra: str) -> dict:
    return {"type": "FPN", "out_channels": 256, "start_level": 1, "add_extra_convs": extra,
            "relu_before_extra_convs": True, "num_outs": 5}


def retinanet_config(v2: bool) -> dict:
    head = {"type": "RetinaHead", "num_classes": 3}
    if v2:
        head["norm_cfg"] = {"type": "GN", "num_groups": 32}
    return {"type": "RetinaNet", "backbone": BACKBONE,
            "neck": fpn("on_input" if v2 else "on_output"), "bbox_head": head,
            "train_cfg": False, "test_cfg": TEST_CFG}


FCOS_CONFIG = {
    "type": "FCOS", "backbone": BACKBONE, "neck": fpn("on_output"),
    "bbox_head": {"type": "FCOSHead", "num_classes": 3, "strides": [8, 16, 32, 64, 128],
                  "regress_ranges": [[-1, 64], [64, 128], [128, 256], [256, 512], [512, 1e8]],
                  "norm_on_bbox": True, "centerness_on_reg": True, "conv_bias": True,
                  "prior_offset": 0.0},
    "train_cfg": False,
    # every point passes (torchvision's threshold is on sqrt(p * c)); torchvision's NMS 0.6
    "test_cfg": {**TEST_CFG, "score_thr": 0.0, "nms": {"type": "nms", "iou_threshold": 0.6}},
}


def det_cell_anchors() -> list[torch.Tensor]:
    """det's (MMDetection's) RetinaNet anchors per level, in torchvision's ratio-major order:
    sizes 4 * stride * 2 ** (i / 3) unrounded, w = size / sqrt(r), h = size * sqrt(r)."""
    cells = []
    for level in range(5):
        sizes = torch.tensor([32 * 2 ** level * 2 ** (i / 3) for i in range(3)])  # (3,)
        root = torch.tensor([0.5, 1.0, 2.0]).sqrt()[:, None]  # (3, 1)
        widths, heights = (sizes / root).reshape(-1), (sizes * root).reshape(-1)  # (9,)
        cells.append(torch.stack([-widths, -heights, widths, heights], dim=1) / 2)
    return cells


def randomise_head(head: nn.Module, classifier: nn.Conv2d, regressor: nn.Conv2d) -> None:
    """He-scaled tower weights and varied biases (torchvision's init gives every box the prior
    score 0.01) on features of about unit size, small box outputs (boxes of a few strides,
    not clipped to the image), the background row silenced."""
    torch.manual_seed(2)
    with torch.no_grad():
        for module in head.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, math.sqrt(2 / (9 * module.in_channels)))
                if module.bias is not None:
                    module.bias.normal_(0, 0.3)
        regressor.weight.mul_(0.05)
        for tower in (head.classification_head.conv, head.regression_head.conv):
            first = next(m for m in tower.modules() if isinstance(m, nn.Conv2d))
            first.weight.div_(40)  # a random ResNet-50's FPN features have std 15-55
        rows = classifier.bias.view(-1, len(CATEGORIES))  # (A, C)
        rows[:, 0] = -30.0


def build_pair(theirs: nn.Module, config: dict, family):
    randomise_head(theirs.head, theirs.head.classification_head.cls_logits,
                   theirs.head.regression_head.bbox_reg)
    theirs.eval()
    ours = build_detector(config).eval()
    state, notes = select_dense_classes(family, theirs.state_dict(), CATEGORIES, CLASSES)
    ours.load_state_dict(dense_from_torchvision(family, state, ours.state_dict()), strict=True)
    return ours, theirs, notes


def tv_kwargs(**extra) -> dict:
    return dict(weights=None, weights_backbone=None, num_classes=len(CATEGORIES),
                min_size=SIZE, max_size=SIZE, image_mean=[0.0] * 3, image_std=[1.0] * 3,
                detections_per_img=100, topk_candidates=1000, **extra)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two ResNet-50s per case: one thread is several times faster on a shared 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module", params=["v1", "v2"])
def retinanet_pair(request):
    torch.manual_seed(0)
    make = retinanet_resnet50_fpn_v2 if request.param == "v2" else retinanet_resnet50_fpn
    theirs = make(**tv_kwargs(score_thresh=0.05, nms_thresh=0.5))
    theirs.anchor_generator.cell_anchors = det_cell_anchors()
    return build_pair(theirs, retinanet_config(request.param == "v2"), RETINANET)


@pytest.fixture(scope="module")
def fcos_pair():
    torch.manual_seed(0)
    theirs = fcos_resnet50_fpn(**tv_kwargs(score_thresh=1e-4, nms_thresh=0.6))
    return build_pair(theirs, FCOS_CONFIG, FCOS)


def assert_same_detections(ours, theirs, images, squared_scores: bool = False) -> None:
    dets = ours.predict_batch(ImageBatch.from_tensor(images), rescale=False)
    tv_dets = theirs(list(images))
    for i, tv in enumerate(tv_dets):
        num = int(dets.num_dets[i])
        assert num == len(tv["boxes"]) == 100  # random weights: every image fills its 100
        labels = TV_LABEL[dets.labels[i, :num]]  # (100,) in torchvision's numbering
        # a box of one class pairs with torchvision's boxes of the same class (a location's
        # box is the same for every class: class-agnostic regression)
        iou = box_iou(dets.boxes[i, :num], tv["boxes"])  # (100, 100)
        iou[labels[:, None] != tv["labels"][None, :]] = -1
        best, index = iou.max(dim=1)  # (100,)
        matched = best > 0.999
        # torchvision keeps clipped zero-width boxes, det (min_bbox_size = 0) drops them
        assert matched.float().mean() >= 0.97
        tv_scores = tv["scores"][index[matched]]
        torch.testing.assert_close(dets.scores[i, :num][matched],
                                   tv_scores ** 2 if squared_scores else tv_scores,
                                   rtol=0, atol=1e-5)


@torch.no_grad()
def test_retinanet_features_and_head_outputs_are_torchvisions(retinanet_pair, images):
    ours, theirs, notes = retinanet_pair
    feats = ours.extract_feat(images)
    tv_feats = list(theirs.backbone(images).values())
    assert len(feats) == len(tv_feats) == 5
    for a, b in zip(feats, tv_feats):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    outputs = ours.bbox_head(feats)
    tv_cls = theirs.head.classification_head.cls_logits(
        theirs.head.classification_head.conv(tv_feats[0]))  # (N, A*C, H, W)
    tv_cls = tv_cls.view(2, 9, len(CATEGORIES), *tv_cls.shape[-2:])[:, :, TV_LABEL]
    # the same anchor order (ratio outer, size inner); only the classes are picked
    torch.testing.assert_close(outputs.cls_logits[0].view(2, 9, 3, *tv_cls.shape[-2:]), tv_cls,
                               rtol=1e-4, atol=1e-4)
    assert notes == ["classifier: 3 classes picked by name from torchvision's 3 categories"]


@torch.no_grad()
def test_retinanet_detections_are_torchvisions(retinanet_pair, images):
    ours, theirs, _ = retinanet_pair
    assert_same_detections(ours, theirs, images)


@torch.no_grad()
def test_fcos_detections_are_torchvisions_scores_squared(fcos_pair, images):
    ours, theirs, _ = fcos_pair
    assert_same_detections(ours, theirs, images, squared_scores=True)


def test_unmatched_class_names_leave_the_classifier_at_its_initialisation(fcos_pair):
    ours, theirs, _ = fcos_pair
    state, notes = select_dense_classes(FCOS, theirs.state_dict(), CATEGORIES, ["dog", "cat"])
    mapped = dense_from_torchvision(FCOS, state, ours.state_dict())
    assert "bbox_head.conv_cls.weight" not in mapped
    assert "bbox_head.conv_reg.weight" in mapped
    assert "no 'cat'" in notes[0]


def test_the_wrong_fpn_extra_levels_are_named():
    theirs = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3)
    ours = build_detector({**retinanet_config(False), "neck": fpn("on_input")})
    with pytest.raises(CheckpointError, match=r"1 of another shape.*neck\.fpn_convs\.3\.conv\."
                                              r"weight \(256, 256, 3, 3\) vs \(256, 2048, 3, 3\)"):
        dense_from_torchvision(RETINANET, theirs.state_dict(), ours.state_dict())
