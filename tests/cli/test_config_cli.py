"""`det config show / diff / schema` through the CLI: output, exit codes, error blocks."""

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
R50 = str(ROOT / "presets" / "retinanet_r50.toml")
R101 = str(ROOT / "presets" / "retinanet_r101.toml")


@pytest.fixture
def run(monkeypatch):
    monkeypatch.chdir(ROOT)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_help_lists_command_groups(run):
    result = run("--help")
    assert result.exit_code == 0
    assert "config" in result.stdout and "Show, compare and describe configs" in result.stdout


def test_show_prints_the_file_and_its_extends_chain(run):
    result = run("config", "show", R50)
    assert result.exit_code == 0
    assert "extends chain" in result.stdout
    assert "presets/_base/schedules/schedule_1x.toml" in result.stdout
    assert "lr = 0.01" in result.stdout


def test_show_resolved_with_origins(run):
    result = run("config", "show", R50, "--resolved", "--origin", "--set", "optimizer.lr=0.02")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(l.startswith("depth = 50") and l.endswith("# presets/_base/models/retinanet_r50_fpn.toml:11")
               for l in lines)
    assert any(l.startswith("lr = 0.02") and l.endswith("# --set optimizer.lr=0.02") for l in lines)
    assert any(l.startswith("in_channels = [256, 512, 1024, 2048]") and "# derived" in l for l in lines)
    assert any(l.endswith("# default") for l in lines)
    data = tomllib.loads(result.stdout)
    assert data["model"]["backbone"]["depth"] == 50 and data["optimizer"]["lr"] == 0.02


def test_show_json(run):
    result = run("config", "show", R50, "--resolved", "--origin", "--format", "json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["config"]["lr_config"]["step"] == [8, 11]
    assert data["origins"]["lr_config.step"] == "presets/_base/schedules/schedule_1x.toml:18"


def test_invalid_config_is_one_block_exit_2_no_traceback(run, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'extends = "{R50}"\n\n[model.train_cfg.assigner]\npos_iou_th = 0.6\n'
                   '[model.backbone]\ntype = "ResNot"\n')
    result = run("config", "show", str(bad), "--resolved")
    assert result.exit_code == 2
    err = result.stderr
    assert "model.train_cfg.assigner.pos_iou_th: unknown key 'pos_iou_th'" in err
    assert "did you mean 'pos_iou_thr'?" in err
    assert f"{bad}:4" in err
    assert "model.backbone.type: unknown backbone type 'ResNot'" in err and "did you mean 'ResNet'?" in err
    assert "Traceback" not in err + result.stdout


def test_debug_shows_the_exception(run, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('extends = "missing.toml"\n')
    result = run("config", "show", str(bad), "--resolved", "--debug")
    assert isinstance(result.exception, ConfigError)
    assert "missing.toml does not exist" in str(result.exception)


def test_bad_set_is_a_clear_error(run):
    result = run("config", "show", R50, "--resolved", "--set", "model.bbox_head.num_classes")
    assert result.exit_code == 2
    assert "is not KEY=VALUE" in result.stderr


def test_diff_equal_exit_0(run):
    result = run("config", "diff", R50, R50)
    assert result.exit_code == 0
    assert "resolve to the same config" in result.stderr


def test_diff_reports_key_by_key_exit_1(run):
    result = run("config", "diff", R50, R101)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "~ model.backbone.depth: 50 -> 101",
        '~ model.backbone.init_cfg.checkpoint: "torchvision://resnet50" -> "torchvision://resnet101"',
    ]
    result = run("config", "diff", R50, R101, "--json")
    assert json.loads(result.stdout)[0] == {"path": "model.backbone.depth", "kind": "changed", "old": 50, "new": 101}


def test_schema_is_json_schema(run, tmp_path):
    result = run("config", "schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert {"model", "data", "optimizer", "lr_config"} <= set(schema["properties"])
    # each backbone's default: its label, outputs' channels and the weights it loads
    backbones = {k: v["x-det-default"] for k, v in schema["$defs"].items()
                 if "x-det-default" in v}
    assert backbones["SwinTransformerConfig"] == {
        "label": "Swin-T", "out_channels": [96, 192, 384, 768],
        "weights": ["torchvision://swin_t"]}  # convert_weights is off by default
    assert backbones["MobileNetV3Config"] == {
        "label": "MobileNetV3-Large", "out_channels": [40, 112, 960],
        "weights": ["torchvision://mobilenet_v3_large"]}
    assert backbones["ResNetConfig"]["weights"] == ["torchvision://resnet50"]
    assert {"ConvNeXtConfig", "MobileNetV2Config", "RegNetConfig", "CSPNeXtConfig"} <= set(
        backbones)
    out = tmp_path / "schema.json"
    assert run("config", "schema", "--out", str(out)).exit_code == 0
    assert json.loads(out.read_text()) == schema
