"""MMDetection 2.x-era key names: a det model's weights written out under 2.x's names (by the
hand-written rules below, the layout of mmcv 1.x's BaseTransformerLayer and 2.x's DETRHead),
read back through the checkpoint loader into the same model exactly; a key of the 2.x layout
that has no 3.x name is named in the error."""

from __future__ import annotations

import re

import pytest
import torch

from detcli.config.loader import load_config
from detcli.engine.checkpoint import load_checkpoint
from detcli.engine.mmdet2_keys import upgrade_mmdet2_keys
from detcli.errors import CheckpointError
from detcli.models.build import build_detector


DEFORMABLE_2X = {"level_embed": "level_embeds", "reference_points_fc.": "reference_points.",
                 "memory_trans_fc.": "enc_output.", "memory_trans_norm.": "enc_output_norm.",
                 "pos_trans_fc.": "pos_trans.", "pos_trans_norm.": "pos_trans_norm."}


def name_2x(key: str, input_proj: bool) -> str:
    """det's (3.x's) DETR / Deformable DETR key -> the name MMDetection 2.x saved it under;
    ``input_proj``: DETR's 1x1 projection sat in the head (Deformable DETR had a neck)."""
    if input_proj and key.startswith("neck.convs.0.conv."):
        return "bbox_head.input_proj." + key.removeprefix("neck.convs.0.conv.")
    if key.startswith("query_embedding."):
        return "bbox_head." + key
    for new, old in DEFORMABLE_2X.items():
        if key.startswith(new):
            return "bbox_head.transformer." + old + key.removeprefix(new)
    if key.startswith(("encoder.", "decoder.")):
        key = re.sub(r"layers\.(\d+)\.self_attn\.", r"layers.\1.attentions.0.", key)
        key = re.sub(r"layers\.(\d+)\.cross_attn\.", r"layers.\1.attentions.1.", key)
        key = re.sub(r"layers\.(\d+)\.ffn\.", r"layers.\1.ffns.0.", key)
        return "bbox_head.transformer." + key
    return key  # backbone, neck, bbox_head.fc_cls / reg_ffn / fc_reg / *_branches


def save_2x(state: dict, path) -> None:
    torch.save({"meta": {"mmdet_version": "2.25.0", "CLASSES": ("a", "b", "c")},
                "state_dict": state}, path)


@pytest.mark.parametrize("preset, overrides, sample", [
    ("detr_tiny_synth", [], "bbox_head.transformer.decoder.layers.0.attentions.1.attn."
                            "in_proj_weight"),
    ("deformable_detr_tiny_synth", ["model.with_box_refine=true", "model.as_two_stage=true"],
     "bbox_head.transformer.enc_output_norm.weight"),
    ("deformable_detr_tiny_synth", [], "bbox_head.transformer.reference_points.weight"),
])
def test_a_2x_file_loads_into_dets_model_exactly(tmp_path, preset, overrides, sample):
    cfg = load_config(preset, overrides).cfg
    torch.manual_seed(0)
    saved = build_detector(cfg.model)
    old = {name_2x(k, preset == "detr_tiny_synth"): v for k, v in saved.state_dict().items()}
    assert sample in old
    assert not any(k.startswith(("encoder.", "decoder.", "query_embedding")) for k in old)
    save_2x(old, tmp_path / "old.pth")
    torch.manual_seed(1)
    model = build_detector(cfg.model)
    report = load_checkpoint(tmp_path / "old.pth", model)
    assert report.exact, report.lines()
    for key, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_deformable_detr_2x_names():
    old = ["bbox_head.transformer.level_embeds",
           "bbox_head.transformer.reference_points.weight",
           "bbox_head.transformer.enc_output.weight",
           "bbox_head.transformer.enc_output_norm.bias",
           "bbox_head.transformer.pos_trans.weight",
           "bbox_head.transformer.pos_trans_norm.weight",
           "bbox_head.transformer.encoder.layers.5.attentions.0.sampling_offsets.weight",
           "bbox_head.transformer.decoder.layers.2.attentions.1.value_proj.bias",
           "bbox_head.transformer.decoder.layers.2.attentions.0.attn.out_proj.weight",
           "bbox_head.query_embedding.weight", "bbox_head.cls_branches.6.bias",
           "bbox_head.reg_branches.0.4.weight", "neck.extra_convs.0.gn.weight"]
    new = upgrade_mmdet2_keys({k: torch.zeros(1) for k in old}, "f.pth")
    assert list(new) == ["level_embed", "reference_points_fc.weight", "memory_trans_fc.weight",
                         "memory_trans_norm.bias", "pos_trans_fc.weight", "pos_trans_norm.weight",
                         "encoder.layers.5.self_attn.sampling_offsets.weight",
                         "decoder.layers.2.cross_attn.value_proj.bias",
                         "decoder.layers.2.self_attn.attn.out_proj.weight",
                         "query_embedding.weight", "bbox_head.cls_branches.6.bias",
                         "bbox_head.reg_branches.0.4.weight", "neck.extra_convs.0.gn.weight"]


def test_fcos_first_predictor_names_load(tmp_path):
    cfg = load_config("fcos_tiny_synth").cfg
    saved = build_detector(cfg.model)
    old = {re.sub(r"^bbox_head\.conv_(cls|reg|centerness)\.", r"bbox_head.fcos_\1.", k): v
           for k, v in saved.state_dict().items()}
    assert "bbox_head.fcos_centerness.weight" in old
    save_2x(old, tmp_path / "fcos_old.pth")
    report = load_checkpoint(tmp_path / "fcos_old.pth", build_detector(cfg.model))
    assert report.exact, report.lines()


def test_a_3x_state_is_left_as_it_is():
    state = {"encoder.layers.0.self_attn.attn.in_proj_weight": torch.zeros(1),
             "bbox_head.fc_cls.weight": torch.ones(1)}
    assert upgrade_mmdet2_keys(state, "f.pth") == state


def test_a_2x_key_without_a_3x_name_is_named():
    state = {"bbox_head.transformer.encoder.layers.0.attentions.0.attn.in_proj_weight":
             torch.zeros(1),
             "bbox_head.transformer.decoder.ref_point_head.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match=r"1 of its keys have no MMDetection 3.x name det "
                                              r"knows: bbox_head\.transformer\.decoder\."
                                              r"ref_point_head\.weight"):
        upgrade_mmdet2_keys(state, "f.pth")


def test_both_names_of_one_tensor_are_refused():
    state = {"bbox_head.fcos_cls.weight": torch.zeros(1), "bbox_head.conv_cls.weight":
             torch.zeros(1)}
    with pytest.raises(CheckpointError, match="both the MMDetection 2.x and 3.x names of "
                                              "bbox_head.conv_cls.weight"):
        upgrade_mmdet2_keys(state, "f.pth")
