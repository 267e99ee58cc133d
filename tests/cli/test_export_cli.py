"""`det export onnx` through typer's CliRunner: a verified export with dynamic batch, --json,
and the clear failures: unsupported opset, a checkpoint of another model, the missing extra,
soft-NMS, a verification that finds a difference, and one that compared nothing."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.engine.checkpoint import save_checkpoint
from detcli.models.build import build_detector
from tests.export.tiny_export import CLASSES, detecting_model, make_tiny_export


def run(*args: object):
    return CliRunner().invoke(app, ["export", "onnx", *map(str, args)])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("export_cli"), num_images=4)


def test_dynamic_batch_export_is_verified_on_new_batches(tiny, tmp_path):
    out = tmp_path / "model.onnx"
    result = run(tiny.config, tiny.checkpoint, "--out", out, "--dynamic-batch")
    assert result.exit_code == 0, result.output
    assert out.is_file()
    for text in ("opset 18", "input  images (batch, 3, 256, 256) float32",
                 "BGR -> RGB, then (pixel - mean) / std", "multiple of 32",
                 "output boxes (batch, 100, 4)", "output num_dets (batch,)",
                 "classes square, circle, triangle",
                 "onnxruntime vs PyTorch on 2 new batch(es): 3x3x256x256, 1x3x256x256",
                 "detections: PyTorch 400, ONNX 400, matched 400", "kept detections match"):
        assert text in result.stdout, text


def test_json_report_of_a_static_no_nms_export(tiny, tmp_path):
    out = tmp_path / "candidates.onnx"
    result = run(tiny.config, tiny.checkpoint, "--out", out, "--no-nms", "--input-size", 128,
                 160, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["inputs"] == {"images": [1, 3, 128, 160]}
    assert report["outputs"]["scores"] == [1, 5000] and not report["nms"]
    assert report["verification"]["ok"] and report["verification"]["shapes"] == [
        [1, 3, 128, 160]] * 3


def test_unsupported_opset_exits_1_naming_the_range(tiny, tmp_path):
    result = run(tiny.config, tiny.checkpoint, "--out", tmp_path / "m.onnx", "--opset", 11)
    assert result.exit_code == 1
    assert "opset 11 is not supported: use 17 to 23" in result.output


def test_checkpoint_of_another_model_exits_4_naming_both_class_counts(tiny, tmp_path):
    two = build_detector(load_config(tiny.config, ["model.bbox_head.num_classes=2"]).cfg.model)
    checkpoint = save_checkpoint(tmp_path / "two.pth", two, meta={"classes": ["cat", "dog"]},
                                 rng=False)
    result = run(tiny.config, checkpoint, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 4
    assert "does not fit the model built from the config" in result.output
    assert "trained on 2 classes (cat, dog), but the config has model.bbox_head.num_classes = 3" \
        in result.output


def test_missing_extra_is_named(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    result = run(tiny.config, tiny.checkpoint, "--out", tmp_path / "m.onnx")
    assert result.exit_code == 1
    assert "onnxruntime is not installed" in result.output
    assert "pip install 'detcli[export]'" in result.output


def test_soft_nms_exits_1_with_a_way_out(tiny, tmp_path):
    result = run(tiny.config, tiny.checkpoint, "--out", tmp_path / "m.onnx",
                 "--set", "model.test_cfg.nms.type=soft_nms")
    assert result.exit_code == 1
    assert "test_cfg.nms.type = 'soft_nms' cannot be exported" in result.output
    assert "--no-nms" in result.output


def test_a_difference_found_by_verification_exits_1(tiny, tmp_path, monkeypatch):
    from detcli.export.runtime import OnnxModel

    real_run = OnnxModel.run

    def shifted(self, images, image_sizes=None):  # an exported graph that drifts by 2 pixels
        outputs = real_run(self, images, image_sizes)
        return [outputs[0] + 2.0 * (outputs[2][..., None] >= 0), *outputs[1:]]

    monkeypatch.setattr(OnnxModel, "run", shifted)
    out = tmp_path / "m.onnx"
    result = run(tiny.config, tiny.checkpoint, "--out", out, "--input-size", 96, 96)
    assert result.exit_code == 1
    assert "kept detections differ" in result.stdout
    assert "the exported model disagrees with PyTorch beyond tolerance" in result.output
    assert "has no ONNX counterpart" in result.output
    assert out.is_file()  # kept for inspection


def test_a_check_that_compared_nothing_exits_1_unless_allowed(tiny, tmp_path):
    model = detecting_model(tiny.config)
    torch.nn.init.constant_(model.bbox_head.retina_cls.bias, -30.0)  # every score ~1e-13
    silent = save_checkpoint(tmp_path / "silent.pth", model, meta={"classes": CLASSES}, rng=False)
    out = tmp_path / "m.onnx"
    result = run(tiny.config, silent, "--out", out, "--input-size", 64, 64)
    assert result.exit_code == 1
    assert "detections: PyTorch 0, ONNX 0, matched 0" in result.stdout
    assert "nothing compared: neither side kept a detection" in result.stdout
    assert "the export check compared nothing: PyTorch and onnxruntime kept no detection on the " \
           "3 verification image(s)" in result.output  # synthetic: the 4 are larger than 64 px
    assert "--allow-empty-verify" in result.output
    assert out.is_file()  # kept for inspection

    allowed = run(tiny.config, silent, "--out", out, "--input-size", 64, 64,
                  "--allow-empty-verify", "--json")
    assert allowed.exit_code == 0, allowed.output
    report = json.loads(allowed.stdout)["verification"]
    assert report["ok"] and report["compared_nothing"] and report["num_reference"] == 0
