"""Swin Transformer: MMDetection's names and outputs on the same weights (fixture made by
tools/mmdet_fixtures/swin.py), the original and torchvision layouts converted (same features),
the shifted-window mask, freezing and config checks."""

from pathlib import Path

import pytest
import torch
import torchvision
from pydantic import ValidationError

from detcli.errors import CheckpointError
from detcli.models.backbones import SwinTransformer, SwinTransformerConfig
from detcli.models.backbones.swin import relative_position_index, shift_mask
from detcli.models.backbones.swin_weights import (
    swin_from_original,
    swin_from_torchvision,
    unfold_order_reduction,
)
from detcli.models.pretrained import PretrainedInit, torchvision_url
from detcli.registry import BACKBONES
from tests.models.backbones.seeded import seeded_input, seeded_state

FIXTURE = torch.load(Path(__file__).with_name("mmdet_swin.pt"), weights_only=False)


def build_ours(cfg: dict) -> SwinTransformer:
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}
    return BACKBONES.build(SwinTransformerConfig.model_validate(values))


def test_swin_t_names_and_shapes_equal_mmdetection():
    entry = FIXTURE["names"]
    with torch.device("meta"):
        model = build_ours(entry["cfg"])
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) ^ set(entry["shapes"])) == []
    assert ours == entry["shapes"]
    assert torch.equal(relative_position_index(7), FIXTURE["index"])


@pytest.mark.parametrize("name", sorted(FIXTURE["outputs"]))
def test_outputs_equal_mmdetection_on_the_same_weights(name):
    entry = FIXTURE["outputs"][name]
    model = build_ours(entry["cfg"]).eval()
    floats = {k: s for k, s in entry["shapes"].items() if not k.endswith("position_index")}
    result = model.load_state_dict(seeded_state(floats, FIXTURE["seed"]), strict=False)
    assert all(k.endswith("relative_position_index") for k in result.missing_keys)
    assert not result.unexpected_keys
    with torch.no_grad():
        outs = model(seeded_input(entry["input"], FIXTURE["seed"]))
    assert len(outs) == len(entry["outs"])
    for got, expected in zip(outs, entry["outs"]):
        assert expected.abs().mean() > 0.1  # the features are not degenerate
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_shift_mask_separates_the_regions_the_roll_joins():
    # a 4 x 4 grid of 2 x 2 windows shifted by 1: along each axis rows 0-1 are region 0,
    # row 2 region 1, row 3 region 2; the last window holds one token of each of 4 regions
    mask = shift_mask(4, 4, 2, 1, torch.device("cpu"))
    assert mask.shape == (4, 4, 4)
    assert (mask[0] == 0).all()  # window (0, 0): rows 0-1, cols 0-1, one region
    # window (0, 1): columns 2 (region 1) and 3 (region 2): tokens 0, 2 vs 1, 3
    assert torch.equal(mask[1] == 0, torch.tensor([[1, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0],
                                                   [0, 1, 0, 1]], dtype=torch.bool))
    assert torch.equal(mask[3] == 0, torch.eye(4, dtype=torch.bool))
    assert set(mask.unique().tolist()) == {0.0, -100.0}


def test_merging_order_matches_unfold():
    # original order [x00, x10, x01, x11] of C = 1 channel -> unfold's [x00, x01, x10, x11]
    weight = torch.tensor([[0.0, 10.0, 1.0, 11.0]])
    assert unfold_order_reduction(weight).tolist() == [[0.0, 1.0, 10.0, 11.0]]


def randomise(module: torch.nn.Module) -> None:
    """Non-trivial bias tables and norms (zeros and ones at init)."""
    torch.manual_seed(0)
    for name, param in module.named_parameters():
        if "relative_position_bias_table" in name or "norm" in name:
            param.data.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)


def test_equals_torchvision_swin_on_its_converted_weights(tmp_path):
    # torchvision's SwinTransformer class (swin_t's layout) at a small width and window 3
    tv = torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
        window_size=[3, 3], stochastic_depth_prob=0.2).eval()
    randomise(tv)
    path = tmp_path / "swin.pth"
    torch.save(tv.state_dict(), path)
    model = SwinTransformer(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4],
                            window_size=3, init_cfg=PretrainedInit(checkpoint=str(path)))
    model.init_weights()  # torchvision's layout converted; norm0..3 keep weight 1, bias 0
    model.eval()
    # 25 x 29, 13 x 15, 7 x 8, 4 x 4 tokens: odd grids (window and merging padding), and more
    # than one window everywhere (torchvision stops shifting where one window covers the grid)
    x = torch.randn(1, 3, 100, 116)
    with torch.no_grad():
        feats, t = [], x
        for i, layer in enumerate(tv.features):
            t = layer(t)
            if i % 2 == 1:
                feats.append(t)  # (N, h, w, C) before the merging
        outs = model(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(25, 29), (13, 15), (7, 8), (4, 4)]
    for got, stage in zip(outs, feats):
        expected = torch.nn.functional.layer_norm(stage, stage.shape[-1:]).permute(0, 3, 1, 2)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    converted = swin_from_torchvision(tv.state_dict())
    assert set(converted) == set(model.state_dict()) - {
        f"norm{i}.{p}" for i in range(4) for p in ("weight", "bias")}
    assert torchvision_url("swin_t").endswith("swin_t-704ceda3.pth")


def original_layout(state: dict) -> dict:
    """det's Swin state dict in the original repository's layout (inverse renames, merging
    weights back to the [x00, x10, x01, x11] order), plus a head and the final norm."""
    out = {}
    for key, value in state.items():
        if key.startswith("norm"):
            continue
        new = (key.replace("stages.", "layers.").replace("attn.w_msa.", "attn.")
               .replace("ffn.layers.0.0.", "mlp.fc1.").replace("ffn.layers.1.", "mlp.fc2.")
               .replace("patch_embed.projection.", "patch_embed.proj."))
        if "downsample.reduction" in new:  # unfold (c, k) -> original (k, c)
            o, i = value.shape
            value = value.reshape(o, i // 4, 4)[:, :, [0, 2, 1, 3]].transpose(1, 2).reshape(o, i)
        elif "downsample.norm" in new:
            value = value.reshape(-1, 4)[:, [0, 2, 1, 3]].t().reshape(-1)
        out[new] = value.clone()
    out["norm.weight"], out["head.weight"] = torch.ones(8), torch.zeros(5, 8)
    return out


def test_convert_weights_reads_the_original_layout(tmp_path):
    kwargs = dict(embed_dims=8, depths=[2, 1], num_heads=[1, 2], strides=[4, 2],
                  out_indices=[0, 1], window_size=3)
    source = SwinTransformer(**kwargs).eval()
    randomise(source)
    path = tmp_path / "swin_original.pth"
    torch.save({"model": original_layout(source.state_dict())}, path)
    model = SwinTransformer(**kwargs, convert_weights=True,
                            init_cfg=PretrainedInit(checkpoint=str(path)))
    model.init_weights()
    for key, value in source.state_dict().items():
        if not key.startswith("norm"):
            torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert "head.weight" not in swin_from_original(original_layout(source.state_dict()))
    unconverted = SwinTransformer(**kwargs, init_cfg=PretrainedInit(checkpoint=str(path)))
    with pytest.raises(CheckpointError, match="convert_weights = true"):
        unconverted.init_weights()


def test_bias_tables_of_another_window_are_resized(tmp_path):
    kwargs = dict(embed_dims=8, depths=[2], num_heads=[2], strides=[4], out_indices=[0])
    source = SwinTransformer(**kwargs, window_size=3)
    with torch.no_grad():  # head h's table is h + 1 everywhere: any resize keeps it
        for block in source.stages[0].blocks:
            block.attn.w_msa.relative_position_bias_table.copy_(torch.tensor([[1.0, 2.0]]))
    path = tmp_path / "w3.pth"
    torch.save(source.state_dict(), path)
    model = SwinTransformer(**kwargs, window_size=5, init_cfg=PretrainedInit(checkpoint=str(path)))
    model.init_weights()  # (25, 2) tables -> (81, 2); the 9 x 9 index buffer is the model's
    table = model.stages[0].blocks[1].attn.w_msa.relative_position_bias_table
    assert table.shape == (81, 2)
    torch.testing.assert_close(table, torch.tensor([[1.0, 2.0]]).expand(81, 2))
    assert torch.equal(model.stages[0].blocks[0].attn.w_msa.relative_position_index,
                       relative_position_index(5))
    torch.testing.assert_close(model.stages[0].blocks[0].attn.w_msa.qkv.weight,
                               source.stages[0].blocks[0].attn.w_msa.qkv.weight)


def test_frozen_stages_stop_the_gradient_as_mmdetection():
    model = SwinTransformer(embed_dims=8, depths=[1, 1, 1], num_heads=[1, 1, 2],
                            strides=[4, 2, 2], out_indices=[0, 1, 2], window_size=2,
                            frozen_stages=1, drop_path_rate=0.5, with_cp=True)
    model.train()
    sum(o.sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    for name, param in model.named_parameters():
        frozen = name.startswith(("patch_embed.", "stages.0.", "norm0."))
        assert (param.grad is None) is frozen, name
    assert not model.stages[0].training and model.stages[1].training
    assert model.stages[2].blocks[0].attn.drop_path_rate == 0.5


def test_channels_last_and_autocast_forward():
    model = SwinTransformer(embed_dims=8, depths=[1, 2], num_heads=[1, 2], strides=[4, 2],
                            out_indices=[0, 1], window_size=3).eval()
    x = torch.randn(1, 3, 40, 52)
    with torch.no_grad():
        expected = model(x)
        channels_last = model(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    for a, b, c in zip(expected, channels_last, low):
        torch.testing.assert_close(b, a)
        assert (c.float() - a).abs().mean() < 0.05 * a.abs().mean()
    assert [tuple(o.shape) for o in expected] == [(1, 8, 10, 13), (1, 16, 5, 7)]


def test_config_out_channels_label_and_checks():
    cfg = SwinTransformerConfig(out_indices=[1, 2, 3])
    assert cfg.out_channels() == [192, 384, 768] and cfg.label() == "Swin-T"
    with pytest.raises(ValidationError, match=r"num_heads\[1\] = 5 does not divide"):
        SwinTransformerConfig(num_heads=[3, 5, 12, 24])
    with pytest.raises(ValidationError, match="out_indices"):
        SwinTransformerConfig(out_indices=[4])
    with pytest.raises(ValidationError, match="must equal patch_size"):
        SwinTransformerConfig(strides=[2, 2, 2, 2])
