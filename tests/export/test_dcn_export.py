"""ONNX export of deformable convs: a tiny FCOS with ``dcn_on_last_conv`` (a DCNv2 ending each
head tower, on every level) exported with a dynamic batch and size at opset 17 (the oldest:
ONNX's version converter runs too), its graph holding the portable kernel's GridSample and no
DeformConv, run by onnxruntime on new inputs and compared with PyTorch's ``predict_batch``
(which runs torchvision's kernel)."""

from __future__ import annotations

import onnx
import pytest
import torch

from detcli.data.synth import make_synthetic_dataset
from detcli.export import ExportOptions, OnnxModel, export_onnx
from detcli.export.verify_inputs import synthetic_images
from detcli.models.dcn import ModulatedDeformConv2dPack
from tests.export.test_fcos_atss_export import (
    FCOS_SETTINGS,
    assert_matches_predict,
    detecting_model,
    write_config,
)

# three levels instead of five: a smaller graph, the same DCN on every level
THREE_LEVELS = FCOS_SETTINGS + """dcn_on_last_conv = true
strides = [8, 16, 32]
regress_ranges = [[-1, 64], [64, 128], [128, 1e8]]
"""


@pytest.fixture(scope="module")
def dcn_fcos(tmp_path_factory):
    root = tmp_path_factory.mktemp("dcn_export")
    synth = make_synthetic_dataset(root / "synth", num_train=0, num_val=1, image_size=128, seed=5)
    config = write_config(root / "fcos_dcn.toml", "fcos_tiny_synth.toml",
                          synth.img_prefix("val"), synth.ann_file("val"), THREE_LEVELS)
    model = detecting_model(config, ["model.neck.num_outs=3"])
    for pack in model.modules():  # offsets of a pixel or two, masks away from 0.5
        if isinstance(pack, ModulatedDeformConv2dPack):
            torch.nn.init.normal_(pack.conv_offset.weight, std=0.05)
            torch.nn.init.normal_(pack.conv_offset.bias, std=1.0)
    options = ExportOptions(dynamic_batch=True, dynamic_size=True, opset=17)
    result = export_onnx(model, root / "fcos_dcn.onnx", input_size=(256, 288), options=options)
    return model, result


def test_dcn_fcos_exports_with_the_portable_kernel(dcn_fcos):
    model, result = dcn_fcos
    packs = [m for m in model.modules() if isinstance(m, ModulatedDeformConv2dPack)]
    assert len(packs) == 2 and all(p.kernel == "torchvision" for p in packs)  # restored
    ops = [node.op_type for node in onnx.load(str(result.path)).graph.node]
    assert "DeformConv" not in ops
    assert ops.count("GridSample") == 2 * 3  # two towers on three levels
    assert result.opset == 17


def test_dcn_fcos_onnx_matches_predict_on_new_batches_and_sizes(dcn_fcos):
    model, result = dcn_fcos
    with torch.no_grad():  # the offsets move the taps: the DCN is not a plain conv here
        x = torch.randn(1, model.bbox_head.feat_channels, 8, 8)
        offset, _ = model.bbox_head.cls_convs[-1].conv.offsets_and_mask(x)
    assert float(offset.abs().mean()) > 0.5
    runner = OnnxModel(result.path)
    for (n, h, w), seed in (((1, 224, 320), 1), ((2, 320, 192), 2)):
        assert_matches_predict(model, runner, torch.stack(synthetic_images([(h, w)] * n,
                                                                           seed=seed)))
