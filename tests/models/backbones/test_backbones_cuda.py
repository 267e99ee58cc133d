"""On CUDA (skipped without it): torchvision's CUDA deform_conv2d against its CPU kernel, and the
light (MobileNetV2/V3) and strong (ResNeXt-101 with DCNv2, Swin-T) backbones through a
mixed-precision training step."""

import pytest
import torch

from detcli.models.backbones import MobileNetV2, MobileNetV3, ResNeXt, SwinTransformer
from detcli.models.dcn import DCNConfig, ModulatedDeformConv2dPack

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_dcnv2_cuda_equals_cpu_forward_and_backward():
    torch.manual_seed(0)
    layer = ModulatedDeformConv2dPack(8, 8, 3, stride=2, padding=1, groups=2, deform_groups=2)
    torch.nn.init.normal_(layer.conv_offset.weight, std=0.3)
    x = torch.randn(2, 8, 17, 23)
    results = []
    for device in ("cpu", "cuda"):
        dev_layer = ModulatedDeformConv2dPack(8, 8, 3, stride=2, padding=1, groups=2,
                                              deform_groups=2).to(device)
        dev_layer.load_state_dict(layer.state_dict())
        xd = x.to(device).requires_grad_(True)
        out = dev_layer(xd)
        out.square().sum().backward()
        results.append((out.cpu(), xd.grad.cpu(), dev_layer.conv_offset.weight.grad.cpu()))
    for cpu, cuda in zip(*results):
        torch.testing.assert_close(cuda, cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("build", [
    lambda: MobileNetV2(out_indices=(2, 4, 7)),  # light
    lambda: ResNeXt(depth=101, groups=64, base_width=4, frozen_stages=1,  # strong, with DCNv2
                    dcn=DCNConfig(), stage_with_dcn=(False, True, True, True)),
    lambda: MobileNetV3(),  # light: strides 8, 16, 32
    lambda: SwinTransformer(drop_path_rate=0.2, frozen_stages=1),  # strong: Swin-T
    lambda: SwinTransformer(with_cp=True),  # Swin-T recomputing its blocks in backward
], ids=["mobilenet_v2", "resnext101_64x4d_dcnv2", "mobilenet_v3_large", "swin_t", "swin_t_cp"])
def test_bf16_training_step_on_cuda(build):
    model = build().cuda().train()
    x = torch.randn(2, 3, 256, 320, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        outs = model(x)
    loss = sum(o.float().square().mean() for o in outs)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert [o.shape[-2:] for o in outs][-1] == (8, 10)  # stride 32
    model.eval()
    with torch.no_grad():
        fp32 = model(x)[-1]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model(x)[-1].float()
    assert (bf16 - fp32).abs().mean() < 0.05 * fp32.abs().mean()
