"""``--init-from torchvision://retinanet_resnet50_fpn`` / ``fcos_resnet50_fpn``: torchvision's
COCO RetinaNet and FCOS converted, the classifier rows picked by class name. The download is
replaced by torchvision's own model built offline with random weights and four named
categories (the real files have COCO's 91); nothing touches the network."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchvision.models.detection import fcos_resnet50_fpn, retinanet_resnet50_fpn

import detcli.models.torchvision_weights as tvw
from detcli.engine.resume import init_from_weights
from detcli.errors import CheckpointError
from detcli.models.build import build_detector
from detcli.models.torchvision_dense import current_layout

CATEGORIES = ["__background__", "person", "N/A", "dog"]
BACKBONE = {"type": "ResNet", "depth": 50, "init_cfg": False}
FPN = {"type": "FPN", "out_channels": 256, "start_level": 1, "add_extra_convs": "on_output",
       "relu_before_extra_convs": True, "num_outs": 5}


def fake_download(monkeypatch, theirs):
    monkeypatch.setattr(tvw, "download_detector",
                        lambda name: (theirs.state_dict(), list(CATEGORIES)))


def trainer(model, classes):
    return SimpleNamespace(model=model, train_dataset=SimpleNamespace(CLASSES=classes))


def test_retinanet_loads_everything_with_the_dataset_classes(monkeypatch):
    theirs = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    fake_download(monkeypatch, theirs)
    model = build_detector({"type": "RetinaNet", "backbone": BACKBONE, "neck": FPN,
                            "bbox_head": {"type": "RetinaHead", "num_classes": 2}})
    report = init_from_weights(trainer(model, ("dog", "person")),
                               "torchvision://retinanet_resnet50_fpn")
    assert report.load.exact  # every tensor of the model came from torchvision's weights
    # per anchor: dog (row 3), person (row 1) of torchvision's 4
    rows = theirs.head.classification_head.cls_logits.bias.view(9, 4)[:, [3, 1]].reshape(-1)
    assert torch.equal(model.bbox_head.retina_cls.bias, rows)
    assert torch.equal(model.neck.fpn_convs[3].conv.weight,
                       theirs.backbone.fpn.extra_blocks.p6.weight)
    assert report.notes[0] == "classifier: 2 classes picked by name from torchvision's 2 categories"


def test_fcos_with_an_unknown_class_keeps_its_classifier_and_says_so(monkeypatch):
    theirs = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    fake_download(monkeypatch, theirs)
    model = build_detector({
        "type": "FCOS", "backbone": BACKBONE, "neck": FPN,
        "bbox_head": {"type": "FCOSHead", "num_classes": 1, "strides": [8, 16, 32, 64, 128],
                      "regress_ranges": [[-1, 64], [64, 128], [128, 256], [256, 512], [512, 1e8]],
                      "norm_on_bbox": True, "centerness_on_reg": True, "conv_bias": True,
                      "prior_offset": 0.0}})
    before = model.bbox_head.conv_cls.weight.clone()
    with torch.no_grad():
        for scale in model.bbox_head.scales:
            scale.scale.fill_(2.0)  # torchvision has no Scale: the converted ones are 1
    report = init_from_weights(trainer(model, ("square",)), "torchvision://fcos_resnet50_fpn")
    assert sorted(report.load.missing) == ["bbox_head.conv_cls.bias", "bbox_head.conv_cls.weight"]
    assert torch.equal(model.bbox_head.conv_cls.weight, before)
    assert torch.equal(model.bbox_head.conv_centerness.weight,
                       theirs.head.regression_head.bbox_ctrness.weight)
    assert torch.equal(model.bbox_head.cls_convs[1].gn.weight,
                       theirs.head.classification_head.conv[4].weight)
    assert [s.scale.item() for s in model.bbox_head.scales] == [1.0] * 5
    assert "no 'square'" in report.notes[0]


def test_older_key_names_are_brought_up_to_date_by_torchvision():
    theirs = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    state = theirs.state_dict()
    # torchvision < 0.13 named the head's convs conv.i (no Conv2dNormActivation) and used
    # FrozenBatchNorm2d (no num_batches_tracked)
    old = {k.replace("classification_head.conv.0.0.", "classification_head.conv.0."): v
           for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert "head.classification_head.conv.0.weight" in old
    current = current_layout("retinanet_resnet50_fpn", old, 4)
    assert torch.equal(current["head.classification_head.conv.0.0.weight"],
                       state["head.classification_head.conv.0.0.weight"])
    renamed = {"head.classification_head.conv.0.weight", "head.classification_head.conv.0.bias"}
    assert set(current) == (set(old) - renamed) | {"head.classification_head.conv.0.0.weight",
                                                   "head.classification_head.conv.0.0.bias"}


def test_a_file_of_another_model_is_named():
    state = retinanet_resnet50_fpn(weights=None, weights_backbone=None,
                                   num_classes=4).state_dict()
    state["head.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 unknown \['head.extra.weight'\]"):
        current_layout("retinanet_resnet50_fpn", state, 4)
