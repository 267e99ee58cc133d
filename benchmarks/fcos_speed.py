"""Speed of det's FCOS R50-FPN against torchvision's ``fcos_resnet50_fpn``, runs alternating.

    python benchmarks/fcos_speed.py [--device cpu] [--batch 2] [--size 320] [--iters 5]
        [--warmup 2] [--amp bf16] [--channels-last] [--bare] [--tv-frozen] [--cls-bias B]

The options, inputs, timing and report are ``benchmarks/retinanet_speed.py``'s (imported from
it): N images of S x S pixels with 5 random GT boxes each; train (forward + loss + backward +
SGD step), infer (``predict`` with decoding and NMS) and, with ``--bare``, the network alone.

Ours is ``presets/fcos_r50.toml``'s model (caffe-style ResNet-50, FPN with P6/P7 from P5's
output, the GroupNorm FCOSHead with 80 classes; random init, ``init_cfg = false``);
torchvision's is ``fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=80)``
with ``min_size = max_size = size`` and ``detections_per_img = 100``. The two post-process
differently -- torchvision scores sqrt(class x centerness) and thresholds that at 0.2, det
(MMDetection) thresholds the class score at 0.05 and multiplies by centerness -- so both
classifiers' biases are set to ``--cls-bias`` (default logit(0.05)) and both centerness biases
to 10 (centerness about 1): about half of the candidates pass either threshold, and NMS sees a
comparable, heavy load.

As for RetinaNet, the preset freezes the stem and ``layer1`` with frozen BatchNorm, while
torchvision's randomly initialised model trains every layer; ``--tv-frozen`` builds
torchvision's the way it does for fine-tuning (FrozenBatchNorm2d, 3 trainable stages).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection import FCOS, fcos_resnet50_fpn
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
sys.path.insert(0, str(ROOT / "benchmarks"))

import detcli  # noqa: E402
from retinanet_speed import (  # noqa: E402  (the shared harness)
    NUM_CLASSES,
    compare,
    parse_args,
    torchvision_size,
)

PRESET = "fcos_r50"  # a packaged preset, by name
CENTERNESS_BIAS = 10.0


def build_ours(args) -> torch.nn.Module:
    cfg = detcli.load_config(PRESET, overrides=["model.backbone.init_cfg=false"]).cfg
    model = detcli.build_detector(cfg.model)
    with torch.no_grad():
        model.bbox_head.conv_cls.bias.fill_(args.cls_bias)
        model.bbox_head.conv_centerness.bias.fill_(CENTERNESS_BIAS)
    return model


def build_torchvision(args) -> torch.nn.Module:
    settings = dict(**torchvision_size(args), detections_per_img=100)
    if args.tv_frozen:
        resnet = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        backbone = _resnet_fpn_extractor(resnet, 3, returned_layers=[2, 3, 4],
                                         extra_blocks=LastLevelP6P7(256, 256))
        model = FCOS(backbone, NUM_CLASSES, **settings)
    else:
        model = fcos_resnet50_fpn(weights=None, weights_backbone=None,
                                  num_classes=NUM_CLASSES, **settings)
    with torch.no_grad():
        model.head.classification_head.cls_logits.bias.fill_(args.cls_bias)
        model.head.regression_head.bbox_ctrness.bias.fill_(CENTERNESS_BIAS)
    return model


def main() -> None:
    args = parse_args()
    torch.manual_seed(0)
    compare("FCOS", build_ours(args), build_torchvision(args), args)


if __name__ == "__main__":
    main()
