"""The plugin presets (#24) resolve to MMDetection 3.3's configs: ``faster_rcnn_r50_attn1111``
(empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py) and ``fcos_r50_dcn``
(fcos/fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py). Each differs
from the preset it extends in exactly the keys MMDetection's config changes, to MMDetection's
values; ``det config import`` of MMDetection's own file (kept under
tests/fixtures/mmdet_configs) resolves to the preset up to the same few keys it differs in for
the base config; and the model's state-dict keys and shapes are MMDetection's (recorded by
tools/mmdet_fixtures/attn1111_shapes.py and fcos_dcn_shapes.py), so the zoo's checkpoints load
strictly."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from detcli.config.catalog import list_presets
from detcli.config.diff import flatten
from detcli.config.loader import load_config
from detcli.config.mmdet_import import import_mmdet_config
from detcli.config.mmdet_sections import translate_schedule
from detcli.models.build import build_detector
from detcli.zoo import mmdet as zoo

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CONFIGS = FIXTURES / "mmdet_configs"
ATTN = "empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py"
FCOS_DCN = "fcos/fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py"


def resolved(config: str | Path) -> dict:
    return flatten(load_config(config).resolved())


def changed(base: str | Path, other: str | Path) -> dict:
    """{flattened key: (base's value, other's value)} where the two resolved configs differ;
    None: the key is absent."""
    a, b = resolved(base), resolved(other)
    return {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


def imported(name: str, folder: Path) -> tuple[str, Path]:
    """(preset it extends, path of the TOML) of ``det config import`` of MMDetection's ``name``."""
    result = import_mmdet_config(CONFIGS / name, out_folder=folder)
    out = folder / (Path(name).stem + ".toml")
    out.write_text(result.text)
    return result.preset, out


# What det config import writes over any 1x COCO preset from MMDetection 3.3's own files:
# the 3.x dataloaders' settings, and LinearLR/ConstantLR(end=500) as 499 warmup iterations
# where the presets (from the 2.x configs' warmup_iters = 500) have 500.
IMPORT_ONLY = {
    "data.train.min_size": (0, 32), "data.val.test_mode": (False, True),
    "data.test.test_mode": (False, True), "data.persistent_workers": (False, True),
    "data.group_by_aspect_ratio": (False, True), "lr_config.warmup_iters": (500, 499),
}


def test_faster_rcnn_r50_attn1111_is_mmdetections():
    # MMDetection's config changes only the backbone's plugins; MMCV's GeneralizedAttention
    # defaults (position_embedding_dim -1, position_magnitude 1, q_stride 1) filled in
    attention = {"type": "GeneralizedAttention", "spatial_range": -1, "num_heads": 8,
                 "position_embedding_dim": -1, "position_magnitude": 1.0, "kv_stride": 2,
                 "q_stride": 1, "attention_type": "1111", "postfix": ""}
    plugin = "model.backbone.plugins[0]"
    assert changed("faster_rcnn_r50", "faster_rcnn_r50_attn1111") == {
        "model.backbone.plugins": (False, None),  # off in faster_rcnn_r50
        **{f"{plugin}.cfg.{key}": (None, value) for key, value in attention.items()},
        f"{plugin}.stages": (None, [False, False, True, True]),
        f"{plugin}.position": (None, "after_conv2"),
    }


def test_the_import_of_mmdetections_attn1111_config_is_the_preset(tmp_path):
    _, base = imported("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py", tmp_path)
    _, attn = imported(ATTN, tmp_path)
    assert changed("faster_rcnn_r50", base) == IMPORT_ONLY
    assert changed("faster_rcnn_r50_attn1111", attn) == IMPORT_ONLY


def test_fcos_r50_dcn_is_mmdetections():
    normalize = ["data.train.pipeline[4].mean", "data.val.pipeline[1].transforms[2].mean",
                 "data.test.pipeline[1].transforms[2].mean"]
    assert changed("fcos_r50", "fcos_r50_dcn") == {
        "model.backbone.dcn": (False, None),
        "model.backbone.dcn.type": (None, "DCNv2"),
        "model.backbone.dcn.deform_groups": (None, 1),
        "model.backbone.dcn.fallback_on_stride": (None, False),
        "model.backbone.stage_with_dcn": ([False] * 4, [False, True, True, True]),
        "model.backbone.init_cfg.checkpoint": ("open-mmlab://detectron/resnet50_caffe",
                                               "open-mmlab://detectron2/resnet50_caffe"),
        "model.bbox_head.center_sampling": (False, True),
        "model.bbox_head.norm_on_bbox": (False, True),
        "model.bbox_head.centerness_on_reg": (False, True),
        "model.bbox_head.dcn_on_last_conv": (False, True),
        "model.bbox_head.conv_bias": ("auto", True),
        "model.bbox_head.loss_bbox.type": ("IoULoss", "GIoULoss"),
        "model.bbox_head.loss_bbox.linear": (False, None),  # IoULoss's own fields
        "model.bbox_head.loss_bbox.mode": ("log", None),
        "model.test_cfg.nms.iou_threshold": (0.5, 0.6),
        # data_preprocessor mean=[103.530, 116.280, 123.675], std 1, bgr_to_rgb=False
        **{key: ([102.9801, 115.9465, 122.7717], [103.53, 116.28, 123.675]) for key in normalize},
        # optim_wrapper = dict(clip_grad=None) over the base's max_norm=35, norm_type=2
        "optimizer_config.grad_clip": (None, False),
        "optimizer_config.grad_clip.max_norm": (35.0, None),
        "optimizer_config.grad_clip.norm_type": (2.0, None),
        # LinearLR(start_factor=1/3, end=500) where the base has ConstantLR(factor=1/3)
        "lr_config.warmup": ("constant", "linear"),
    }


def test_the_import_of_mmdetections_fcos_dcn_config_is_the_preset(tmp_path):
    _, base = imported("fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py", tmp_path)
    preset, dcn = imported(FCOS_DCN, tmp_path)
    assert preset == "fcos_r50_dcn"
    assert changed("fcos_r50", base) == IMPORT_ONLY
    assert changed("fcos_r50_dcn", dcn) == IMPORT_ONLY
    assert load_config(dcn).cfg.optimizer_config.grad_clip is None  # clip_grad=None: off


def state_dict_shapes(preset: str) -> dict[str, list[int]]:
    cfg = load_config(preset, ["model.backbone.init_cfg=false"]).cfg
    with torch.device("meta"):  # names and shapes only
        model = build_detector(cfg.model)
    return {key: list(value.shape) for key, value in model.state_dict().items()}


def test_the_attn1111_preset_has_mmdetections_keys_and_shapes():
    recorded = json.loads((FIXTURES / "mmdet" / "faster_rcnn_r50_attn1111_shapes.json")
                          .read_text())["shapes"]
    ours = state_dict_shapes("faster_rcnn_r50_attn1111")
    assert ours == recorded  # strict loading needs the keys and shapes, not their order
    # the plugin blocks sit where MMDetection's do: the backbone's keys in the same order
    # (det's box head registers shared_fcs before fc_cls / fc_reg, MMDetection's after)
    backbone = [k for k in ours if k.startswith("backbone.")]
    assert backbone == [k for k in recorded if k.startswith("backbone.")]
    blocks = {k.rsplit(".gen_attention_block.", 1)[0] for k in ours if ".gen_attention_block." in k}
    assert len(blocks) == 6 + 3  # every bottleneck of conv4_x and conv5_x
    assert ours["backbone.layer4.2.gen_attention_block.query_conv.weight"] == [512, 512, 1, 1]


def test_the_fcos_dcn_preset_has_mmdetections_keys_and_shapes():
    recorded = json.loads((FIXTURES / "mmdet" / "fcos_r50_dcn_shapes.json").read_text())["shapes"]
    ours = state_dict_shapes("fcos_r50_dcn")
    assert ours == recorded and list(ours) == list(recorded)


def test_the_zoo_links_the_checkpoints_to_the_presets():
    attn = zoo.ENTRIES["faster-rcnn_r50_fpn_attention_1111_1x_coco"]
    assert (attn.preset, attn.sha256_prefix, attn.box_ap) == ("faster_rcnn_r50_attn1111",
                                                              "403cccba", 40.0)
    dcn = zoo.ENTRIES["fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco"]
    assert (dcn.preset, dcn.sha256_prefix, dcn.box_ap) == ("fcos_r50_dcn", "ae4d8b3d", 42.3)


def test_clip_grad_none_switches_the_presets_clipping_off():
    # MMEngine's optim_wrapper clip_grad=None means no clipping; a dict is the clipping
    out: list = []
    assert translate_schedule({"optim_wrapper": {"clip_grad": None}}, out) == {
        "optimizer_config": {"grad_clip": False}}
    assert translate_schedule({"optim_wrapper": {"clip_grad": {"max_norm": 35}}}, out) == {
        "optimizer_config": {"grad_clip": {"max_norm": 35}}}
    assert translate_schedule({"optim_wrapper": {}}, out) == {} and out == []


def test_det_presets_names_the_plugin_and_the_detectron2_weights():
    infos = {info.name: info for info in list_presets()}
    assert infos["faster_rcnn_r50_attn1111"].backbone == "ResNet-50 + GeneralizedAttention"
    assert infos["faster_rcnn_r50"].backbone == "ResNet-50"
    dcn = infos["fcos_r50_dcn"]
    assert dcn.backbone == "ResNet-50 caffe DCNv2"
    # the preset's checkpoint is one of those det can load for its backbone
    assert "open-mmlab://detectron2/resnet50_caffe" in dcn.backbone_weights
