"""torchvision's peers for ``gpu_suite.py``: the same-architecture models, full and tiny.

K classes (torchvision's two-stage models count the background too: K + 1).

Full size (the GPU run): ResNet-50 with FrozenBatchNorm2d and 3 trainable stages (with
``tv_frozen``, the work our R50 presets do) or torchvision's random-init builder, FPN 256,
torchvision's heads, 80 classes; the two-stage models with MMDetection's settings where
torchvision has the option (``faster_rcnn_speed.py``'s: 1000 training proposals per image,
RoIAlign with ``sampling_ratio = 0``). Tiny (``--smoke``): the same classes of model on
torchvision's ResNet-18 with FPN 64, 64-channel heads, a 256-wide box head and the tiny
presets' proposal counts, so that the smoke run exercises every code path in seconds.
"""

from __future__ import annotations

import argparse
import math

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _resnet_fpn_extractor
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

TINY_CHANNELS = 64  # FPN and head width of the tiny peers
TINY_FC = 256  # box head width of the tiny two-stage peers (faster_rcnn_tiny_synth's)
CENTERNESS_BIAS = 10.0  # centerness about 1, as fcos_speed.py


def resnet_fpn(args: argparse.Namespace, p6p7: bool) -> nn.Module:
    """ResNet + FPN on C3-C5 with P6/P7 (dense heads) or on C2-C5 with a max-pooled P6 (RPN)."""
    tiny = args.smoke
    depth = "resnet18" if tiny else "resnet50"
    norm = FrozenBatchNorm2d if args.tv_frozen else nn.BatchNorm2d
    resnet = torchvision.models.get_model(depth, weights=None, norm_layer=norm)
    layers = [2, 3, 4] if p6p7 else [1, 2, 3, 4]
    if not tiny:
        extra = LastLevelP6P7(256, 256) if p6p7 else None
        return _resnet_fpn_extractor(resnet, 3 if args.tv_frozen else 5, returned_layers=layers,
                                     extra_blocks=extra)
    if args.tv_frozen:  # 3 trainable stages, as the extractor makes them
        for name, param in resnet.named_parameters():
            param.requires_grad_(name.startswith(("layer2", "layer3", "layer4")))
    in_channels = [64 * 2 ** (i - 1) for i in layers]  # BasicBlock widths
    extra = LastLevelP6P7(TINY_CHANNELS, TINY_CHANNELS) if p6p7 else LastLevelMaxPool()
    return BackboneWithFPN(resnet, {f"layer{i}": str(k) for k, i in enumerate(layers)},
                           in_channels, TINY_CHANNELS, extra_blocks=extra)


def size_settings(args: argparse.Namespace) -> dict[str, int]:
    """torchvision's transform settings that keep an H x W input at its size."""
    return {"min_size": min(args.size), "max_size": max(args.size)}


def retinanet(args: argparse.Namespace, num_classes: int) -> nn.Module:
    model = RetinaNet(resnet_fpn(args, p6p7=True), num_classes, detections_per_img=100,
                      **size_settings(args))
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(args.cls_bias)
    return model


def fcos(args: argparse.Namespace, num_classes: int) -> nn.Module:
    model = FCOS(resnet_fpn(args, p6p7=True), num_classes, detections_per_img=100,
                 **size_settings(args))
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(args.cls_bias)
        model.head.regression_head.bbox_ctrness.bias.fill_(CENTERNESS_BIAS)
    return model


def two_stage_settings(args: argparse.Namespace, num_classes: int) -> dict:
    """MMDetection's R50 numbers where torchvision has an option (``faster_rcnn_speed.py``);
    the tiny presets' proposal and RoI counts for the tiny peers."""
    settings = dict(**size_settings(args), box_detections_per_img=100,
                    rpn_post_nms_top_n_train=1000,
                    box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7,
                                                    sampling_ratio=0))
    if args.smoke:
        width = TINY_CHANNELS * 7 * 7
        settings.update(rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
                        rpn_pre_nms_top_n_test=500, rpn_post_nms_top_n_test=300,
                        box_batch_size_per_image=256, box_head=TwoMLPHead(width, TINY_FC),
                        box_predictor=FastRCNNPredictor(TINY_FC, num_classes + 1))
    return settings


def faster_rcnn(args: argparse.Namespace, num_classes: int) -> nn.Module:
    settings = two_stage_settings(args, num_classes)
    classes = None if "box_predictor" in settings else num_classes + 1  # torchvision's rule
    return FasterRCNN(resnet_fpn(args, p6p7=False), classes, **settings)


def mask_rcnn(args: argparse.Namespace, num_classes: int) -> nn.Module:
    settings = two_stage_settings(args, num_classes)
    if args.smoke:
        settings.update(mask_head=MaskRCNNHeads(TINY_CHANNELS, [TINY_CHANNELS] * 4, 1),
                        mask_predictor=MaskRCNNPredictor(TINY_CHANNELS, TINY_CHANNELS,
                                                         num_classes + 1))
    classes = None if "box_predictor" in settings else num_classes + 1  # torchvision's rule
    return MaskRCNN(resnet_fpn(args, p6p7=False), classes, **settings)


PEERS = {"retinanet": retinanet, "fcos": fcos, "faster_rcnn": faster_rcnn,
         "mask_rcnn": mask_rcnn}


# ---- the two-stage loads ----------------------------------------------------------------


def hot_logits(num_classes: int, hot: int, prob: float) -> torch.Tensor:
    """Box classifier biases over (K foreground classes, background), det's order (K + 1,):
    ``hot`` classes spread over the K at the logit giving softmax probability ``prob`` when
    every other logit is 0 (the classifier weights are 0), the rest 0
    (``faster_rcnn_speed.hot_logits`` for any K)."""
    bias = torch.zeros(num_classes + 1)
    hot = min(hot, num_classes)
    if hot:
        # p = e^b / (e^b * hot + (K + 1 - hot))  =>  e^b = p (K + 1 - hot) / (1 - p * hot)
        value = math.log(prob * (num_classes + 1 - hot) / (1 - prob * hot))
        bias[torch.arange(hot) * (num_classes // hot)] = value
    return bias


def align_two_stage(ours: nn.Module, theirs: nn.Module | None, args: argparse.Namespace) -> None:
    """The same last layers in det's two-stage model (every box stage) and torchvision's
    (``faster_rcnn_speed.align_last_layers``): RPN objectness N(0, 0.01) with bias 0, RPN
    deltas 0, box classifiers' weights 0 with the hot-class biases, box deltas 0. Every
    proposal then scores above ``score_thr`` for the hot classes in both."""
    bias = hot_logits(ours.num_classes, args.hot_classes, args.hot_prob)  # background last
    cls_layers = [(head.fc_cls, bias) for _, head in ours.roi_head.box_stages()]
    reg_layers = [head.fc_reg for _, head in ours.roi_head.box_stages()]
    objectness = [ours.rpn_head.rpn_cls]
    reg_layers.append(ours.rpn_head.rpn_reg)
    if theirs is not None:
        tv_bias = torch.cat([bias[-1:], bias[:-1]])  # background first
        cls_layers.append((theirs.roi_heads.box_predictor.cls_score, tv_bias))
        reg_layers += [theirs.roi_heads.box_predictor.bbox_pred, theirs.rpn.head.bbox_pred]
        objectness.append(theirs.rpn.head.cls_logits)
    with torch.no_grad():
        for layer in objectness:
            layer.weight.normal_(0.0, 0.01)
            layer.bias.zero_()
        for layer, layer_bias in cls_layers:
            layer.weight.zero_()
            layer.bias.copy_(layer_bias)
        for layer in reg_layers:
            layer.weight.zero_()
            layer.bias.zero_()
