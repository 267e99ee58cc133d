"""``--init-from torchvision://fasterrcnn_resnet50_fpn``: torchvision's COCO Faster R-CNN, its
box predictor picked by class name. The download is replaced by a locally built torchvision
model with five named categories (the real one has COCO's 91); nothing touches the network."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchvision.models import resnet18
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor

import detcli.models.torchvision_weights as tvw
from detcli.engine.resume import init_from_weights
from detcli.errors import CheckpointError
from detcli.models.build import build_detector
from detcli.models.torchvision_weights import select_classes

CATEGORIES = ["__background__", "person", "N/A", "car", "dog"]
NAME = "torchvision://fasterrcnn_resnet50_fpn"


def predictor_state(num_rows: int) -> dict[str, torch.Tensor]:
    """A predictor whose row r holds the value r everywhere (box rows: 4r..4r+3 hold 4r..)."""
    rows = torch.arange(num_rows, dtype=torch.float32)
    box_rows = torch.arange(4 * num_rows, dtype=torch.float32)
    return {"roi_heads.box_predictor.cls_score.weight": rows[:, None].expand(-1, 3).clone(),
            "roi_heads.box_predictor.cls_score.bias": rows.clone(),
            "roi_heads.box_predictor.bbox_pred.weight": box_rows[:, None].expand(-1, 3).clone(),
            "roi_heads.box_predictor.bbox_pred.bias": box_rows.clone(),
            "backbone.body.conv1.weight": torch.ones(1)}


def test_select_classes_picks_rows_by_name_background_first():
    state, notes = select_classes(predictor_state(5), CATEGORIES, ["dog", "person"])
    # dog is row 4, person row 1; background row 0 stays first (torchvision's layout)
    assert state["roi_heads.box_predictor.cls_score.bias"].tolist() == [0, 4, 1]
    assert state["roi_heads.box_predictor.bbox_pred.bias"].tolist() == [
        0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7]
    assert state["backbone.body.conv1.weight"].tolist() == [1.0]  # the rest untouched
    assert notes == ["box predictor: 2 classes picked by name from torchvision's 4 categories"]


def test_a_class_torchvision_lacks_leaves_the_predictor_out_and_says_so():
    state, notes = select_classes(predictor_state(5), CATEGORIES, ["dog", "unicorn"])
    assert not any(k.startswith("roi_heads.box_predictor.") for k in state)
    assert "no 'unicorn'" in notes[0] and "own initialisation" in notes[0]


@pytest.fixture
def fake_download(monkeypatch):
    """download_detector -> a torchvision Faster R-CNN (ResNet-18 FPN, 5 categories)."""
    torch.manual_seed(0)
    theirs = FasterRCNN(_resnet_fpn_extractor(resnet18(), trainable_layers=5),
                        num_classes=len(CATEGORIES))
    monkeypatch.setattr(tvw, "download_detector",
                        lambda name: (theirs.state_dict(), list(CATEGORIES)))
    return theirs


def ours(num_classes: int):
    return build_detector({
        "type": "FasterRCNN",
        "backbone": {"type": "ResNet", "depth": 18, "init_cfg": False},
        "neck": {"type": "FPN", "out_channels": 256, "num_outs": 5},
        "rpn_head": {"type": "RPNHead"},
        "roi_head": {"type": "StandardRoIHead",
                     "bbox_head": {"type": "Shared2FCBBoxHead", "num_classes": num_classes}},
    })


def test_init_from_torchvision_loads_everything_with_the_dataset_classes(fake_download):
    model = ours(2)
    trainer = SimpleNamespace(model=model, train_dataset=SimpleNamespace(CLASSES=("dog", "car")))
    report = init_from_weights(trainer, NAME)
    assert report.load.exact  # every tensor of the model came from torchvision's weights
    theirs = fake_download.roi_heads.box_predictor
    # ours: dog, car, background <- torchvision rows 4, 3, 0
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, theirs.cls_score.weight[[4, 3, 0]])
    box_bias = theirs.bbox_pred.bias  # 4 rows per category: dog 16-19, car 12-15
    assert torch.equal(model.roi_head.bbox_head.fc_reg.bias,
                       torch.cat([box_bias[16:20], box_bias[12:16]]))
    assert torch.equal(model.rpn_head.rpn_cls.weight, fake_download.rpn.head.cls_logits.weight)
    assert any("2 classes picked by name" in note for note in report.notes)


def test_init_from_torchvision_without_matching_names_keeps_the_predictor(fake_download):
    model = ours(1)
    before = model.roi_head.bbox_head.fc_cls.weight.clone()
    trainer = SimpleNamespace(model=model, train_dataset=SimpleNamespace(CLASSES=("square",)))
    report = init_from_weights(trainer, NAME)
    assert sorted(report.load.missing) == [
        "roi_head.bbox_head.fc_cls.bias", "roi_head.bbox_head.fc_cls.weight",
        "roi_head.bbox_head.fc_reg.bias", "roi_head.bbox_head.fc_reg.weight"]
    assert torch.equal(model.roi_head.bbox_head.fc_cls.weight, before)
    assert torch.equal(model.backbone.conv1.weight, fake_download.backbone.body.conv1.weight)
    assert any("no 'square'" in note for note in report.notes)


def test_an_unconverted_torchvision_detector_is_a_clear_error():
    trainer = SimpleNamespace(model=ours(1), train_dataset=SimpleNamespace(CLASSES=("dog",)))
    with pytest.raises(CheckpointError, match="converts torchvision's fasterrcnn_resnet50_fpn, "
                                              "fcos_resnet50_fpn, maskrcnn_resnet50_fpn, "
                                              "retinanet_resnet50_fpn, retinanet_resnet50_fpn_v2 "
                                              "weights, not 'ssd300_vgg16'"):
        init_from_weights(trainer, "torchvision://ssd300_vgg16")
