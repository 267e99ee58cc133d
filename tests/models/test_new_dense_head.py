"""A dense head defined in this file only -- an anchor head with its own tower (one shared
stack, 1x1 predictors) and its own registered name -- trains, predicts, is merged by TTA,
explains its assignment and runs through the ONNX graph's candidates, with no change in
detcli/: the protocols are all the rest of the package needs from it.

(Its config names the anchor settings ``priors``, not ``anchor_generator``, so the analysis
tool's list of anchor heads, which one CLI test pins, stays as it is.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import pytest
import torch
from pydantic import Field
from torch import Tensor, nn

import detcli
from detcli.config.loader import load_config
from detcli.config.schema import Schema
from detcli.data.collate import collate
from detcli.engine.tta import merge_views
from detcli.export.graph import ExportWrapper
from detcli.models.build import build_detector
from detcli.models.dense_heads.anchor_head import AnchorHead
from detcli.models.dense_heads.dense_predict import size_ok
from detcli.models.dense_heads.retina_head import retina_anchor_config
from detcli.models.layers import ConvModule
from detcli.models.losses import FocalLossConfig, L1LossConfig
from detcli.models.protocols import TrainingRule
from detcli.registry import BBOX_CODERS, HEADS, LOSSES, PRIOR_GENERATORS
from detcli.structures.dense import DenseOutputs
from detcli.task.coders.delta_xywh import DeltaXYWHBBoxCoderConfig
from detcli.task.prior_generators.anchor_generator import AnchorGeneratorConfig
from tests.engine.test_sync_free import samples

PRESET = Path(detcli.__file__).parent / "presets" / "retinanet_tiny_synth.toml"


class SharedTowerHeadConfig(Schema):
    type: Literal["SharedTowerTestHead"] = "SharedTowerTestHead"
    num_classes: int = Field(3, ge=1)  # a default: tests/test_components.py builds it bare
    in_channels: int | None = None  # the neck's, filled when the detector's config resolves
    feat_channels: int = 16
    priors: AnchorGeneratorConfig = Field(default_factory=retina_anchor_config)


@HEADS.register(SharedTowerHeadConfig)
class SharedTowerHead(AnchorHead):
    """One 3x3 ConvModule shared by classes and boxes, then 1x1 predictors. Built by
    ``Registry.build`` from its fields (``in_channels`` the neck's, filled in by the detector's
    config)."""

    generator_key = "priors"  # its config names the anchors' field so (reports, --set hints)

    def __init__(self, *, num_classes: int, in_channels: int, feat_channels: int,
                 priors: AnchorGeneratorConfig, **cfgs) -> None:
        super().__init__(num_classes=num_classes,
                         prior_generator=PRIOR_GENERATORS.build(priors),
                         bbox_coder=BBOX_CODERS.build(DeltaXYWHBBoxCoderConfig()),
                         loss_cls=LOSSES.build(FocalLossConfig()),
                         loss_bbox=LOSSES.build(L1LossConfig()), **cfgs)
        anchors = self.num_base_priors
        self.tower = ConvModule(in_channels, feat_channels, 3, padding=1)
        self.cls = nn.Conv2d(feat_channels, anchors * num_classes, 1)
        self.reg = nn.Conv2d(feat_channels, anchors * 4, 1)
        nn.init.constant_(self.cls.bias, -1.0)

    def forward(self, feats: Sequence[Tensor]) -> DenseOutputs:
        shared = [self.tower(x) for x in feats]  # L x (N, F, H_l, W_l)
        return DenseOutputs([self.cls(x) for x in shared], [self.reg(x) for x in shared])


@pytest.fixture(scope="module")
def model() -> nn.Module:
    head = '{type="SharedTowerTestHead", num_classes=3}'
    # nms_pre 20: below every level's entries, so the graph's static k adds no filler
    cfg = load_config(PRESET, [f"model.bbox_head={head}", "model.test_cfg.nms_pre=20"]).cfg
    torch.manual_seed(0)
    return build_detector(cfg.model)


def test_it_trains(model):
    model.train()
    images, targets = collate(samples(0))
    losses = model.loss(images, targets)
    assert set(losses) == {"loss_cls", "loss_bbox"}
    sum(losses.values()).backward()
    assert model.bbox_head.tower.conv.weight.grad.abs().sum() > 0
    assert model.bbox_head.training_rule() == TrainingRule("PseudoSampler", "positives")


def test_it_predicts_merges_views_and_exports_the_same_candidates(model):
    model.eval()
    images, _ = collate(samples(1))
    with torch.no_grad():
        dets = model.predict_batch(images)
        merged = merge_views(model, [images])
        cand = model.candidates(images)
        boxes, scores, labels = ExportWrapper(model, nms=False)(images.tensor, images.img_shapes)
    assert int(dets.num_dets.min()) > 0
    for got, want in zip(merged, dets.unbind()):
        assert torch.equal(got.boxes, want.boxes) and torch.equal(got.scores, want.scores)
    keep = cand.valid & size_ok(cand.boxes, model.bbox_head.test_cfg.min_bbox_size)
    assert torch.equal(boxes, cand.boxes) and torch.equal(labels, cand.labels)
    assert torch.equal(scores, torch.where(keep, cand.scores, torch.zeros_like(scores)))


def test_it_explains_its_assignment(model):
    images, targets = collate(samples(2))
    with torch.no_grad():
        outputs = model(images.tensor)
        explained = model.bbox_head.explain_assignment(outputs, images, targets)
    assert explained.role.shape == explained.gt_index.shape == (4, explained.priors.shape[0])
    assert int(explained.positive.sum()) > 0
    assert torch.equal(explained.positive, explained.gt_index >= 0)
