"""FCNMaskHead: MMDetection's layer names, output sizes, the loss of each RoI's class channel,
config checks; mask targets cut from GT masks for known RoIs."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from detcli.errors import ConfigError
from detcli.models.losses import CrossEntropyLoss, L1Loss
from detcli.models.roi_heads import FCNMaskHead, FCNMaskHeadConfig, mask_targets
from detcli.registry import MASK_HEADS


def test_state_dict_names_and_shapes_are_mmdetections():
    head = MASK_HEADS.build(FCNMaskHeadConfig(num_classes=3, conv_out_channels=8,
                                              in_channels=16))
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {
        "convs.0.conv.weight": (8, 16, 3, 3), "convs.0.conv.bias": (8,),
        "convs.1.conv.weight": (8, 8, 3, 3), "convs.1.conv.bias": (8,),
        "convs.2.conv.weight": (8, 8, 3, 3), "convs.2.conv.bias": (8,),
        "convs.3.conv.weight": (8, 8, 3, 3), "convs.3.conv.bias": (8,),
        "upsample.weight": (8, 8, 2, 2), "upsample.bias": (8,),  # ConvTranspose2d: (in, out, k, k)
        "conv_logits.weight": (3, 8, 1, 1), "conv_logits.bias": (3,),
    }


def test_forward_doubles_the_pooled_size_one_mask_per_class_or_one():
    feats = torch.randn(5, 16, 14, 14)
    head = FCNMaskHead(num_classes=3, in_channels=16, conv_out_channels=8)
    assert head(feats).shape == (5, 3, 28, 28) and head.mask_size == 28
    agnostic = FCNMaskHead(num_classes=3, in_channels=16, conv_out_channels=8,
                           class_agnostic=True)
    assert agnostic(feats).shape == (5, 1, 28, 28)
    cfg = FCNMaskHeadConfig(num_classes=3, num_convs=0, upsample_cfg={"type": "bilinear"},
                            in_channels=16)
    bilinear = MASK_HEADS.build(cfg)
    assert bilinear(feats).shape == (5, 3, 28, 28)
    assert set(bilinear.state_dict()) == {"conv_logits.weight", "conv_logits.bias"}


def test_init_is_mmdetections_zero_biases_kaiming_fan_out():
    torch.manual_seed(0)
    head = FCNMaskHead(num_classes=80, in_channels=256)
    for name, value in head.state_dict().items():
        if name.endswith("bias"):
            assert value.abs().max() == 0, name
    # Kaiming normal, fan_out, ReLU: std sqrt(2 / (out * k * k)); conv_logits: 80 * 1 * 1
    std = head.conv_logits.weight.std().item()
    assert std == pytest.approx(math.sqrt(2 / 80), rel=0.05)


def test_loss_reads_each_positives_class_and_skips_padding():
    """Two positives and a padding slot; 1 x 2 masks. RoI 0 (label 1) reads channel 1
    (logits 0, ln 3 vs targets 1, 0: ln 2 and ln 4); RoI 1 (label 0) reads channel 0 (ln 3 and
    -ln 3 vs 1, 1: ln 4/3 and ln 4). The mean over the 4 real pixels; padding (weight 0, wild
    logits) adds nothing."""
    ln3 = math.log(3)
    preds = torch.tensor([[[[9.0, -9.0]], [[0.0, ln3]]],
                          [[[ln3, -ln3]], [[-9.0, 9.0]]],
                          [[[50.0, 50.0]], [[50.0, 50.0]]]])  # (3, 2, 1, 2)
    targets = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]])
    head = FCNMaskHead(num_classes=2, in_channels=4, num_convs=0)
    out = head.loss(preds, targets, torch.tensor([1, 0, 1]), torch.tensor([1.0, 1.0, 0.0]))
    expected = (math.log(2) + math.log(4) + math.log(4 / 3) + math.log(4)) / 4
    assert out["loss_mask"].item() == pytest.approx(expected, rel=1e-6)
    # no positive in the batch: a zero that backward still runs through
    preds.requires_grad_()
    none = head.loss(preds, targets, torch.tensor([1, 0, 1]), torch.zeros(3))["loss_mask"]
    assert none.item() == 0.0
    none.backward()
    assert preds.grad.abs().sum() == 0


def test_class_probs_is_the_sigmoid_of_the_label_channel():
    logits = torch.randn(4, 3, 28, 28)
    labels = torch.tensor([2, 0, 1, 2])
    head = FCNMaskHead(num_classes=3, in_channels=4, num_convs=0)
    expected = torch.stack([logits[i, c] for i, c in enumerate(labels.tolist())]).sigmoid()
    torch.testing.assert_close(head.class_probs(logits, labels), expected)


def test_config_checks():
    with pytest.raises(ValidationError, match="conv_kernel_size must be odd"):
        FCNMaskHeadConfig(num_classes=3, conv_kernel_size=2)
    with pytest.raises(ValidationError, match="must be a mask loss"):
        FCNMaskHeadConfig(num_classes=3, loss_mask={"type": "CrossEntropyLoss"})
    with pytest.raises(ValidationError, match="carafe"):
        FCNMaskHeadConfig(num_classes=3, upsample_cfg={"type": "carafe"})
    with pytest.raises(ConfigError, match="must be a mask loss"):
        FCNMaskHead(num_classes=3, in_channels=4, loss_mask=L1Loss())
    with pytest.raises(ConfigError, match="FCNMaskHead needs in_channels"):
        MASK_HEADS.build(FCNMaskHeadConfig(num_classes=3))
    assert isinstance(FCNMaskHead(num_classes=3, in_channels=4).loss_mask, CrossEntropyLoss)


# ---- mask targets ----------------------------------------------------------------------------

def _left_half() -> torch.Tensor:
    """An 8 x 8 GT mask whose columns 0-3 are foreground."""
    mask = torch.zeros(8, 8, dtype=torch.uint8)
    mask[:, :4] = 1
    return mask


def test_mask_target_of_a_known_roi():
    """RoI = the whole 8 x 8 mask, target 4 x 4: each bin covers 2 x 2 pixels and samples their
    centres (aligned RoIAlign, 2 samples per side), so columns 0-1 are 1 and 2-3 are 0. A RoI
    on the right half (x 4..8) sees only background; one on x 2..6 half of each."""
    masks = _left_half()[None, None]  # (N=1, G=1, 8, 8)
    rois = torch.tensor([[[0.0, 0.0, 8.0, 8.0], [4.0, 0.0, 8.0, 8.0], [2.0, 0.0, 6.0, 8.0]]])
    out = mask_targets(masks, rois, torch.zeros(1, 3, dtype=torch.long), (4, 4))
    assert out.shape == (1, 3, 4, 4) and out.dtype == torch.float32
    assert out[0, 0].tolist() == [[1.0, 1.0, 0.0, 0.0]] * 4
    assert out[0, 1].sum() == 0
    assert out[0, 2].tolist() == [[1.0, 1.0, 0.0, 0.0]] * 4


def test_mask_target_clips_the_roi_to_the_mask_and_zeroes_non_positives():
    """A RoI reaching outside the mask is clipped to it first (MMDetection's mask_target): the
    RoI (-8, 0, 8, 8) gives the target of (0, 0, 8, 8). gt_index -1 (not a positive) gives 0."""
    masks = _left_half()[None, None]
    rois = torch.tensor([[[-8.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 8.0]]])
    out = mask_targets(masks, rois, torch.tensor([[0, -1]]), (4, 4))
    assert out[0, 0].tolist() == [[1.0, 1.0, 0.0, 0.0]] * 4
    assert out[0, 1].sum() == 0


def test_mask_targets_index_each_images_own_gt_slots():
    """Two images, two GT slots each: image 1's RoI matched to its slot 1 reads image 1's
    second mask (flat row 1 * G + 1), not image 0's."""
    masks = torch.zeros(2, 2, 8, 8, dtype=torch.uint8)
    masks[1, 1] = _left_half()
    masks[0, 1] = 1 - _left_half()  # image 0's slot 1 is the opposite
    rois = torch.tensor([[[0.0, 0.0, 8.0, 8.0]], [[0.0, 0.0, 8.0, 8.0]]])
    out = mask_targets(masks, rois, torch.tensor([[1], [1]]), (4, 4))
    assert out[1, 0].tolist() == [[1.0, 1.0, 0.0, 0.0]] * 4
    assert out[0, 0].tolist() == [[0.0, 0.0, 1.0, 1.0]] * 4
    empty = mask_targets(torch.zeros(2, 0, 8, 8, dtype=torch.uint8), rois,
                         torch.full((2, 1), -1), (4, 4))
    assert empty.shape == (2, 1, 4, 4) and empty.sum() == 0


def test_mask_target_resampling_matches_roi_align_by_hand():
    """A RoI off the pixel grid: aligned RoIAlign samples at x1 - 0.5 + (i + 0.5) * bin in
    pixel indices (pixel j's value sits at j); the target is the bilinear value there >= 0.5."""
    gt = torch.zeros(1, 1, 8, 8, dtype=torch.uint8)
    gt[0, 0, :, 3:5] = 1  # columns 3 and 4
    rois = torch.tensor([[[2.5, 0.0, 6.5, 8.0]]])  # width 4 -> 4 bins of 1 pixel, 1 sample each
    out = mask_targets(gt, rois, torch.zeros(1, 1, dtype=torch.long), (1, 4))
    # samples at x = 2.5 - 0.5 + 0.5 + i = 2.5, 3.5, 4.5, 5.5: values 0.5, 1, 0.5, 0
    assert out[0, 0].tolist() == [[1.0, 1.0, 1.0, 0.0]]
