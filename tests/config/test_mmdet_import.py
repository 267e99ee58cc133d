"""``det config import``: MMDetection 3.3's own configs (copied under
tests/fixtures/mmdet_configs with their _base_ files) read without executing them, checked
against MMEngine's reading (expected.json, by tools/mmdet_config_fixture.py), then written as a
det TOML that extends the closest preset and loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.config.mmdet_import import import_mmdet_config
from detcli.config.mmdet_reader import Unread, read_mmdet_config
from detcli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "mmdet_configs"
EXPECTED = json.loads((ROOT / "expected.json").read_text())


def as_json(value):
    """Tuples as lists, as MMEngine's to_dict + json see them."""
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_reader_equals_mmengines_reading(name):
    values = read_mmdet_config(ROOT / name).values
    for key, expected in EXPECTED[name].items():
        assert as_json(values[key]) == expected, key


def test_base_references_and_variables_resolve(tmp_path):
    (tmp_path / "base.py").write_text("size = (640, 480)\nbackend_args = None\n"
                                      "pipeline = [dict(type='Resize', scale=size)]\n")
    (tmp_path / "child.py").write_text(
        "_base_ = './base.py'\n"
        "scale = 2 * 3\n"
        "model = dict(type='RetinaNet', p={{_base_.pipeline}}, s={{_base_.size[0]}}, k=scale,\n"
        "             b=backend_args, f=[i for i in range(3)])\n"
        "import os\n"
        "bad = os.system('touch x')\n")
    values = read_mmdet_config(tmp_path / "child.py").values
    model = values["model"]
    assert model["p"] == [{"type": "Resize", "scale": (640, 480)}] and model["s"] == 640
    assert model["k"] == 6 and model["b"] is None
    assert isinstance(model["f"], Unread) and model["f"].where == "child.py:4"
    assert isinstance(values["bad"], Unread)  # never called
    assert not (tmp_path / "x").exists()


def test_delete_replaces_instead_of_merging(tmp_path):
    (tmp_path / "base.py").write_text("optimizer = dict(type='SGD', lr=0.02, momentum=0.9)\n")
    (tmp_path / "child.py").write_text("_base_ = 'base.py'\n"
                                       "optimizer = dict(_delete_=True, type='AdamW', lr=1e-4)\n")
    assert read_mmdet_config(tmp_path / "child.py").values["optimizer"] == {
        "type": "AdamW", "lr": 1e-4}


def test_a_missing_base_is_named(tmp_path):
    (tmp_path / "child.py").write_text("_base_ = ['../nowhere/base.py']\n")
    with pytest.raises(ConfigError, match=r"nowhere/base.py does not exist"):
        read_mmdet_config(tmp_path / "child.py")


def test_retinanet_r18_extends_the_nearer_of_two_tied_presets(tmp_path):
    result = import_mmdet_config(ROOT / "retinanet/retinanet_r18_fpn_1x_coco.py",
                                 out_folder=tmp_path)
    # r50 and r101 share as many values with it (depth and checkpoint differ in both): depth 18
    # is nearer 50 than 101 (alphabetical order would pick retinanet_r101)
    assert result.preset == "retinanet_r50"
    (tmp_path / "r18.toml").write_text(result.text)
    cfg = load_config(tmp_path / "r18.toml").cfg
    assert cfg.model.backbone.depth == 18
    assert cfg.model.backbone.init_cfg.checkpoint == "torchvision://resnet18"
    assert cfg.optimizer.lr == 0.01  # the file's optim_wrapper.optimizer
    keys = {u.key for u in result.untranslated}
    assert {"model.data_preprocessor", "default_scope", "visualizer"} <= keys
    assert not keys & {"train_dataloader", "param_scheduler", "optim_wrapper", "train_cfg"}
    assert "# not translated: default_scope: MMEngine's registry scope" in result.text


def test_a_deeper_resnet_extends_the_r101_preset(tmp_path):
    (tmp_path / "r152.py").write_text(
        "_base_ = '" + str(ROOT / "retinanet/retinanet_r18_fpn_1x_coco.py") + "'\n"
        "model = dict(backbone=dict(depth=152, init_cfg=dict(checkpoint='torchvision://resnet152'"
        ")), neck=dict(in_channels=[256, 512, 1024, 2048]))\n")
    assert import_mmdet_config(tmp_path / "r152.py", out_folder=tmp_path).preset == \
        "retinanet_r101"


def test_fcos_extends_fcos_r50_with_nothing_to_change(tmp_path):
    result = import_mmdet_config(ROOT / "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
                                 out_folder=tmp_path)
    assert result.preset == "fcos_r50"
    (tmp_path / "fcos.toml").write_text(result.text)
    # fcos_r50 is this config's model, pipelines and schedule: the import writes none over it
    written = result.text.split("\nextends = ", 1)[1]  # after the header's comments
    assert "[model" not in written and "pipeline" not in written
    ours, preset = load_config(tmp_path / "fcos.toml").resolved(), load_config("fcos_r50").resolved()
    assert ours["model"] == preset["model"]
    for split in ("train", "val", "test"):  # PackDetInputs + data_preprocessor -> det's steps
        assert ours["data"][split]["pipeline"] == preset["data"][split]["pipeline"], split
    # ConstantLR(factor=1/3, end=500) holds 1/3 for iterations 0-498 (MMEngine): warmup_iters
    # 499 where the preset (from the 2.x config's warmup_iters = 500) has 500; the rest equal
    assert ours["lr_config"] == {**preset["lr_config"], "warmup_iters": 499}
    assert ours["lr_config"]["warmup"] == "constant" and ours["lr_config"]["step"] == [8, 11]
    assert ours["optimizer"] == preset["optimizer"] and ours["runner"] == preset["runner"]
    # what MMDetection's config has and the preset does not: written, and only that
    assert ours["data"]["train"]["min_size"] == 32 and ours["data"]["group_by_aspect_ratio"]


def test_a_key_det_refuses_is_listed_with_the_reason(tmp_path):
    (tmp_path / "cfg.py").write_text(
        "_base_ = '" + str(ROOT / "retinanet/retinanet_r18_fpn_1x_coco.py") + "'\n"
        "model = dict(bbox_head=dict(fancy_option=3))\n")
    result = import_mmdet_config(tmp_path / "cfg.py", out_folder=tmp_path)
    refused = [u for u in result.untranslated if u.key == "model.bbox_head.fancy_option"]
    assert refused and refused[0].reason.startswith("det refuses it:")
    (tmp_path / "out.toml").write_text(result.text)
    load_config(tmp_path / "out.toml")  # what was written loads


def test_the_cli_writes_the_toml_and_reports_json(tmp_path):
    out = tmp_path / "r18.toml"
    result = CliRunner().invoke(app, ["config", "import", str(ROOT / "retinanet/"
                                      "retinanet_r18_fpn_1x_coco.py"), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["preset"] in ("retinanet_r50", "retinanet_r101") and out.is_file()
    assert any(u["key"] == "train_pipeline" for u in report["untranslated"])
    diff = CliRunner().invoke(app, ["config", "diff", report["preset"], str(out)])
    assert diff.exit_code == 1 and "model.backbone.depth" in diff.stdout


# every config of tests/fixtures/mmdet_configs that imports, and the preset it extends
PICKS = {
    "detr/detr_r50_8xb2-150e_coco.py": "detr_r50",
    "empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py": "faster_rcnn_r50_attn1111",
    "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py": "faster_rcnn_r50",
    "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py": "fcos_r50",
    "fcos/fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py":
        "fcos_r50_dcn",
    "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py": "mask_rcnn_r50",
    "retinanet/retinanet_r18_fpn_1x_coco.py": "retinanet_r50",
    "rtmdet/rtmdet_l_8xb32-300e_coco.py": "rtmdet_l",
    "rtmdet/rtmdet_s_8xb32-300e_coco.py": "rtmdet_s",
    "rtmdet/rtmdet_tiny_8xb32-300e_coco.py": "rtmdet_tiny",
}


@pytest.mark.parametrize("name", sorted(PICKS))
def test_each_kept_config_extends_its_preset(name, tmp_path):
    assert import_mmdet_config(ROOT / name, out_folder=tmp_path).preset == PICKS[name]


def test_attn1111_extends_the_attention_preset_with_no_plugin_written(tmp_path):
    # the file writes GeneralizedAttention without MMCV's defaults (position_embedding_dim,
    # q_stride...); read with them it equals faster_rcnn_r50_attn1111's plugin list, so that
    # preset shares one more value than faster_rcnn_r50 (which has no plugins) instead of tying
    result = import_mmdet_config(ROOT / "empirical_attention/"
                                 "faster-rcnn_r50-attn1111_fpn_1x_coco.py", out_folder=tmp_path)
    assert result.preset == "faster_rcnn_r50_attn1111"
    written = result.text.split("\nextends = ", 1)[1]
    assert "plugins" not in written
    (tmp_path / "attn.toml").write_text(result.text)
    plugins = load_config(tmp_path / "attn.toml").resolved()["model"]["backbone"]["plugins"]
    assert plugins == load_config("faster_rcnn_r50_attn1111").resolved()[
        "model"]["backbone"]["plugins"]
    assert plugins[0]["cfg"]["attention_type"] == "1111" and plugins[0]["cfg"]["kv_stride"] == 2
