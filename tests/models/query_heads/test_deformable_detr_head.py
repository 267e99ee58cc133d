"""DeformableDETRHead by hand: shared or per-layer branches, MMDetection's bias init, boxes
relative to the references, the two-stage encoder loss keys."""

from __future__ import annotations

import math

import pytest
import torch

from detcli.errors import ConfigError
from detcli.models.query_heads.deformable_detr_head import (
    DeformableDETRHead,
    DeformableDETRHeadConfig,
)
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.queries import QueryOutputs


def head(share: bool, layers: int = 2, two_stage: bool = False) -> DeformableDETRHead:
    cfg = DeformableDETRHeadConfig(num_classes=3, embed_dims=8, share_pred_layer=share,
                                   num_pred_layer=layers, as_two_stage=two_stage)
    return DeformableDETRHead.from_config(cfg)


def test_shared_branches_are_one_module_and_the_state_dict_lists_each_index():
    shared = head(share=True)
    assert shared.cls_branches[0] is shared.cls_branches[1]
    assert {"cls_branches.1.weight", "reg_branches.1.4.bias"} <= set(shared.state_dict())
    own = head(share=False)
    assert own.reg_branches[0] is not own.reg_branches[1]


def test_bias_init_prior_prob_and_small_first_boxes():
    own = head(share=False)
    prior = -math.log((1 - 0.01) / 0.01)
    for branch in own.cls_branches:
        torch.testing.assert_close(branch.bias, torch.full((3,), prior))
    assert own.reg_branches[0][-1].bias.tolist() == [0.0, 0.0, -2.0, -2.0]
    assert own.reg_branches[1][-1].bias.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert own.reg_branches[1][-1].weight.abs().sum() == 0
    two_stage = head(share=False, layers=3, two_stage=True)
    assert all(b[-1].bias.abs().sum() == 0 for b in two_stage.reg_branches)


def test_boxes_are_relative_to_the_references():
    """With the init's zero last layers, a layer's box is its reference (centre; the first
    layer's size sigmoid(-2) for point references, a reference box's own size otherwise)."""
    own = head(share=False)
    hidden = torch.randn(2, 1, 3, 8)
    points = torch.tensor([[[0.2, 0.7], [0.5, 0.5], [0.9, 0.1]]])
    boxes = torch.tensor([[[0.3, 0.4, 0.2, 0.1]] * 3])
    out = own(hidden, [points, boxes])
    assert out.cls_logits.shape == (2, 1, 3, 3) and out.boxes.shape == (2, 1, 3, 4)
    small = 1 / (1 + math.exp(2.0))
    torch.testing.assert_close(out.boxes[0, ..., :2], points)
    torch.testing.assert_close(out.boxes[0, ..., 2:], torch.full((1, 3, 2), small))
    torch.testing.assert_close(out.boxes[1], boxes)


def test_encoder_outputs_add_class_agnostic_enc_losses():
    own = head(share=False, layers=3, two_stage=True)
    images = ImageBatch(tensor=torch.zeros(1, 3, 32, 32), img_shapes=[(32, 32)],
                        ori_shapes=[(32, 32)], scale_factors=torch.ones(1, 4),
                        pad_shapes=[(32, 32)])
    targets = DetTargets.from_lists([torch.tensor([[4.0, 4.0, 20.0, 28.0]])],
                                    [torch.tensor([2])])
    decoder = QueryOutputs(torch.randn(2, 1, 5, 3), torch.rand(2, 1, 5, 4) * 0.5 + 0.25)
    encoder = QueryOutputs(torch.randn(1, 1, 7, 3), torch.rand(1, 1, 7, 4) * 0.5 + 0.25)
    losses = own.loss(decoder, images, targets, encoder)
    assert list(losses) == ["loss_cls", "loss_bbox", "loss_iou", "d0.loss_cls", "d0.loss_bbox",
                            "d0.loss_iou", "enc_loss_cls", "enc_loss_bbox", "enc_loss_iou"]
    # class-agnostic: the encoder's matched proposal is pulled towards class 0, not 2
    logits = encoder.cls_logits.clone().requires_grad_(True)
    own.loss(decoder, images, targets, QueryOutputs(logits, encoder.boxes))["enc_loss_cls"] \
        .backward()
    match = own.match(encoder, images, DetTargets.from_lists(
        [targets.boxes[0]], [torch.tensor([0])]))
    query = int(match.result.gt_index[0].argmax())
    assert logits.grad[0, 0, query, 0] < 0 < logits.grad[0, 0, query, 2]


def test_from_config_names_what_a_detector_derives():
    cfg = DeformableDETRHeadConfig(num_classes=3, embed_dims=8)
    with pytest.raises(ConfigError, match="share_pred_layer, num_pred_layer, as_two_stage"):
        DeformableDETRHead.from_config(cfg)
