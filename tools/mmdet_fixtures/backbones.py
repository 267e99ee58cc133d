"""Make tests/models/backbones/mmdet_backbones.pt: MMDetection 3.3's backbone state-dict names
and outputs, for tests/models/backbones/test_backbones_vs_mmdet.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/backbones.py

Recorded, per entry of ``NAMES`` (the full-size backbones of the presets): every state-dict key
with its shape, in order. Per entry of ``OUTPUTS`` (narrow versions of the same, so the file
stays small): the key shapes, and the eval-mode outputs on ``seeded_input(INPUT, SEED)`` with
the weights ``seeded_state(shapes, SEED)`` of tests/models/backbones/seeded.py, so the test
loads the same tensors into det's backbone and compares. The DCNv2 layers run mmcv's
``ModulatedDeformConv2dPack`` on the plain-torch kernel of ``dcn_kernel.py`` (written from
mmcv's CUDA kernel, not from torchvision); ``dcn_layer`` is one such layer alone (grouped,
two deform groups, stride and dilation 2, a bias), its weights included; ``necks`` the PAFPN
neck on seeded maps of odd sizes (``seeded_input(map, SEED + level)``) and ``neck_names`` a
full-size PAFPN's keys.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

from mmcv.ops import ModulatedDeformConv2dPack  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from tests.models.backbones.seeded import seeded_input, seeded_state  # noqa: E402
import dcn_kernel  # noqa: E402

dcn_kernel.install()

OUT = ROOT / "tests" / "models" / "backbones" / "mmdet_backbones.pt"
SEED = 24
INPUT = (1, 3, 32, 48)
DCNV2 = dict(type="DCNv2", deform_groups=1, fallback_on_stride=False)

# MMDetection 3.3's configs: resnext/*x101-64x4d*, dcnv2/faster-rcnn_r50-mdconv-c3-c5*,
# regnet/retinanet_regnetx-3.2GF*, ssdlite_mobilenetv2 (MobileNetV2 with its default
# out_indices), and ResNetV1d as the *_r50-v1d configs use it
NAMES = {
    "resnet50_v1d": dict(type="ResNetV1d", depth=50),
    "resnext101_64x4d": dict(type="ResNeXt", depth=101, groups=64, base_width=4),
    "resnet50_dcnv2_c3_c5": dict(type="ResNet", depth=50, dcn=DCNV2,
                                 stage_with_dcn=(False, True, True, True)),
    "regnetx_3.2gf": dict(type="RegNet", arch="regnetx_3.2gf"),
    # res2net/faster-rcnn_res2net-101_fpn_2x_coco.py's backbone at depth 50
    "res2net50_26w_4s": dict(type="Res2Net", depth=50, scales=4, base_width=26),
    # gcnet/mask-rcnn_r50-gcb-r4-c3-c5_fpn_1x_coco.py's backbone
    "resnet50_gcb_r4_c3_c5": dict(type="ResNet", depth=50, plugins=[dict(
        cfg=dict(type="ContextBlock", ratio=1. / 4), stages=(False, True, True, True),
        position="after_conv3")]),
    "mobilenet_v2": dict(type="MobileNetV2", out_indices=(1, 2, 4, 7)),
}
OUTPUTS = {
    "resnet50_v1d_w16": dict(type="ResNetV1d", depth=50, base_channels=16),
    "resnext50_8x4d_w16": dict(type="ResNeXt", depth=50, groups=8, base_width=4,
                               base_channels=16),
    "resnet50_dcnv2_w16": dict(type="ResNet", depth=50, base_channels=16, dcn=DCNV2,
                               stage_with_dcn=(False, True, True, True)),
    "resnext50_4x4d_dcnv2_dg2_w16": dict(
        type="ResNeXt", depth=50, groups=4, base_width=4, base_channels=16,
        dcn=dict(type="DCNv2", deform_groups=2, fallback_on_stride=False),
        stage_with_dcn=(False, True, False, True)),
    "regnetx_400mf": dict(type="RegNet", arch="regnetx_400mf"),
    "res2net50_8w_4s_dcnv2_w16": dict(type="Res2Net", depth=50, scales=4, base_width=8,
                                      base_channels=16, dcn=DCNV2,
                                      stage_with_dcn=(False, True, False, True)),
    "resnext50_gcb_mul_avg_w16": dict(
        type="ResNeXt", depth=50, groups=4, base_width=4, base_channels=16, plugins=[
            dict(cfg=dict(type="ContextBlock", ratio=1. / 4, pooling_type="avg",
                          fusion_types=("channel_mul",), postfix=1), position="after_conv2"),
            dict(cfg=dict(type="ContextBlock", ratio=1. / 8,
                          fusion_types=("channel_add", "channel_mul"), postfix=2),
                 stages=(True, False, True, False), position="after_conv2")]),
    "regnet_custom_strides": dict(type="RegNet", strides=(2, 2, 2, 1), dilations=(1, 1, 1, 2),
                                  arch=dict(w0=24, wa=36.0, wm=2.5, group_w=8, depth=7,
                                            bot_mul=1.0)),
    "mobilenet_v2_w05": dict(type="MobileNetV2", widen_factor=0.5, out_indices=(0, 2, 4, 6, 7)),
}


# a single mmcv ModulatedDeformConv2dPack: (in, out, kernel) and its keywords
DCN_LAYER = dict(in_channels=8, out_channels=6, kernel_size=3, stride=2, padding=2, dilation=2,
                 groups=2, deform_groups=2, bias=True)
DCN_INPUT = (2, 8, 9, 11)


# necks: MMDetection's config, the input maps' (C, H, W) (odd sizes on purpose)
NECKS = {
    "pafpn_retinanet": (dict(type="PAFPN", in_channels=[16, 32, 64, 128], out_channels=24,
                             start_level=1, add_extra_convs="on_input", num_outs=5),
                        [(16, 9, 13), (32, 5, 7), (64, 3, 4), (128, 2, 2)]),
    "pafpn_maxpool_gn": (dict(type="PAFPN", in_channels=[16, 32, 64], out_channels=32,
                              num_outs=4, norm_cfg=dict(type="GN", num_groups=8)),
                         [(16, 9, 13), (32, 5, 7), (64, 3, 4)]),
    "pafpn_on_output_relu": (dict(type="PAFPN", in_channels=[16, 32, 64], out_channels=16,
                                  num_outs=5, add_extra_convs="on_output",
                                  relu_before_extra_convs=True),
                             [(16, 9, 13), (32, 5, 7), (64, 3, 4)]),
}
NECK_NAMES = {"pafpn_r50": dict(type="PAFPN", in_channels=[256, 512, 1024, 2048],
                                out_channels=256, num_outs=5)}


def neck_entry(cfg: dict, sizes: list[tuple[int, int, int]]) -> dict[str, object]:
    neck = MODELS.build(dict(cfg))
    neck.eval()
    shapes = shapes_of(neck)
    neck.load_state_dict(seeded_state(shapes, SEED), strict=True)
    inputs = [seeded_input((1, *size), SEED + i) for i, size in enumerate(sizes)]
    with torch.no_grad():
        outs = [o.clone() for o in neck(inputs)]
    return {"cfg": cfg, "shapes": shapes, "sizes": sizes, "outs": outs}


def dcn_layer_entry() -> dict[str, object]:
    """mmcv's DCNv2 layer on seeded weights and input (offsets of a few pixels, so some taps
    read across the border)."""
    layer = ModulatedDeformConv2dPack(**DCN_LAYER)
    shapes = shapes_of(layer)
    state = seeded_state(shapes, SEED)
    state["conv_offset.weight"] = state["conv_offset.weight"] * 3
    layer.load_state_dict(state, strict=True)
    x = seeded_input(DCN_INPUT, SEED)
    with torch.no_grad():
        out = layer(x)
    return {"kwargs": DCN_LAYER, "input": DCN_INPUT, "state": state, "out": out}


def shapes_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def main() -> None:
    register_all_modules()
    fixture: dict[str, object] = {"seed": SEED, "input": INPUT, "names": {}, "outputs": {}}
    for name, cfg in NAMES.items():
        fixture["names"][name] = {"cfg": cfg, "shapes": shapes_of(MODELS.build(dict(cfg)))}
    x = seeded_input(INPUT, SEED)
    for name, cfg in OUTPUTS.items():
        model = MODELS.build(dict(cfg))
        model.eval()  # MMDetection's ResNet.train returns None
        shapes = shapes_of(model)
        model.load_state_dict(seeded_state(shapes, SEED), strict=True)
        with torch.no_grad():
            outs = [o.clone() for o in model(x)]
        fixture["outputs"][name] = {"cfg": cfg, "shapes": shapes, "outs": outs}
        print(name, [tuple(o.shape) for o in outs])
    fixture["dcn_layer"] = dcn_layer_entry()
    fixture["necks"] = {name: neck_entry(cfg, sizes) for name, (cfg, sizes) in NECKS.items()}
    fixture["neck_names"] = {name: {"cfg": cfg, "shapes": shapes_of(MODELS.build(dict(cfg)))}
                             for name, cfg in NECK_NAMES.items()}
    torch.save(fixture, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
