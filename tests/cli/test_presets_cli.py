"""`det presets`, and preset names where a command takes CONFIG, run from outside the checkout."""

import json

import pytest
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.presets import preset_names, presets_dir


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no presets/ folder here: names must come from the package
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_presets_json_lists_every_preset_with_its_columns(run):
    result = run("presets", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == preset_names()
    tiny = next(r for r in rows if r["name"] == "retinanet_tiny_synth")
    assert tiny == {
        "name": "retinanet_tiny_synth", "file": str(presets_dir() / "retinanet_tiny_synth.toml"),
        "family": "RetinaNet", "backbone": "ResNet-18 (1/4 width)",
        "backbone_channels": [16, 32, 64, 128], "backbone_weights": [],  # a 1/4-width ResNet
        "dataset": "CocoDataset data/synth, 3 classes",
        "schedule": "12 epochs, AdamW lr 0.001, step at 9, 11",
        "summary": "A tiny RetinaNet for det's synthetic shapes: trains on a CPU in minutes "
                   "(the README's demo).",
    }
    rows = {r["name"]: r for r in rows}
    assert (rows["mask_rcnn_swin_t"]["backbone"], rows["mask_rcnn_swin_t"]["backbone_channels"],
            rows["mask_rcnn_swin_t"]["backbone_weights"]) == (
        "Swin-T", [96, 192, 384, 768],
        ["torchvision://swin_t", "https://github.com/SwinTransformer/storage/releases/download/"
                                 "v1.0.0/swin_tiny_patch4_window7_224.pth"])
    assert (rows["retinanet_mobilenetv3"]["backbone_channels"],
            rows["retinanet_mobilenetv3"]["backbone_weights"]) == (
        [40, 112, 960], ["torchvision://mobilenet_v3_large"])


def test_presets_table_shows_each_name_and_summary(run):
    result = run("presets")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # the table wraps at the terminal's width
    for name in preset_names():
        assert name in out
    assert "Faster R-CNN R50-FPN, 1x schedule on COCO" in out
    assert ("FCOS | ResNet-50 caffe [256, 512, 1024, 2048] | CocoDataset data/coco, 80 classes"
            in out)
    assert "FasterRCNN | ResNeXt-101 64x4d [256, 512, 1024, 2048] |" in out
    assert "RetinaNet | RegNet regnetx_3.2gf [96, 192, 432, 1008] |" in out
    assert "MaskRCNN | Swin-T [96, 192, 384, 768] |" in out
    # the weights line names a URL by its file
    assert ("backbone weights: torchvision://swin_t, swin_tiny_patch4_window7_224.pth" in out)
    assert "RetinaNet | MobileNetV3-Large [40, 112, 960] |" in out


def test_config_show_takes_a_preset_name(run):
    result = run("config", "show", "retinanet_tiny_synth", "--resolved", "--origin")
    assert result.exit_code == 0, result.output
    preset = presets_dir() / "retinanet_tiny_synth.toml"
    assert f"# resolved from {preset} <- " in result.stdout
    depth = next(l for l in result.stdout.splitlines() if l.startswith("depth = "))
    assert depth.startswith("depth = 18") and f"# {preset}:" in depth
    plain = run("config", "show", "fcos_r50")
    assert plain.exit_code == 0 and "FCOS R50-caffe-FPN" in plain.stdout


def test_config_diff_takes_two_names(run):
    result = run("config", "diff", "retinanet_r50", "retinanet_r101")
    assert result.exit_code == 1  # different
    assert "~ model.backbone.depth: 50 -> 101" in result.stdout


def test_an_unknown_name_is_exit_2_with_did_you_mean(run):
    for command in (["config", "show", "retinanet_r5"], ["train", "retinanet_r5"],
                    ["data", "check", "retinanet_r5"]):
        result = run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert "no packaged preset is named 'retinanet_r5'" in result.stderr
        assert "did you mean 'retinanet_r50'" in result.stderr
        assert "Traceback" not in result.output
