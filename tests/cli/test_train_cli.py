"""`det train` through typer's CliRunner: the run, its summary, and errors without tracebacks."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.data.synth import make_synthetic_dataset
from tests.engine.conftest import tiny_config_text


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-cli")
    synth = make_synthetic_dataset(root / "synth", num_train=8, num_val=4, image_size=96, seed=1)
    path = root / "tiny.toml"
    path.write_text(tiny_config_text(synth))
    return path


@pytest.fixture
def run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda *args: CliRunner().invoke(app, [str(a) for a in args])
    torch.set_num_threads(threads)


def test_train_runs_and_ends_with_the_metrics_table(run, config, tmp_path):
    result = run("train", config, "--work-dir", tmp_path, "--device", "cpu",
                 "--set", "runner.max_epochs=1")
    assert result.exit_code == 0, result.output
    assert "COCO bbox metrics" in result.stdout and "bbox_mAP_50" in result.stdout
    assert "per-class AP" in result.stdout and "triangle" in result.stdout
    assert f"latest checkpoint: {tmp_path / 'latest.pth'}" in result.stdout
    assert "Epoch [1][1/2]" in result.output  # plain log lines: not a terminal
    assert (tmp_path / "epoch_1.pth").exists() and (tmp_path / "metrics.jsonl").exists()

    again = run("train", config, "--work-dir", tmp_path, "--device", "cpu",
                "--set", "runner.max_epochs=1", "--resume", "auto")
    assert again.exit_code == 0, again.output
    assert "the run already finished: 1 of 1 epochs trained" in again.output
    assert "COCO bbox metrics" in again.stdout  # the last evaluation, from the checkpoint


def test_json_summary(run, config, tmp_path):
    result = run("train", config, "--work-dir", tmp_path, "--device", "cpu", "--json",
                 "--set", "runner.max_epochs=1", "--set", "data.val=false")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["stop_reason"] == "finished" and summary["epoch"] == 1
    assert summary["latest"] == str(tmp_path / "latest.pth")
    assert summary["restored"] == ["new run"] and summary["metrics"] is None


@pytest.mark.parametrize("args, code, message", [
    (("--amp", "bf16"), 2, "--amp bf16 needs a CUDA device; this run is on cpu"),
    (("--resume", "missing.pth"), 4, "checkpoint missing.pth does not exist"),
    (("--gpus", "64"), 2, "--gpus 64 needs 64 CUDA devices"),
    (("--set", "runner.max_epoch=3"), 2, "unknown key 'max_epoch'"),
    (("--init-from", "torchvision://ssd300_vgg16"), 4,
     "torchvision://ssd300_vgg16: det converts torchvision's fasterrcnn_resnet50_fpn"),
])
def test_mistakes_exit_with_a_message_and_no_traceback(run, config, tmp_path, args, code, message):
    result = run("train", config, "--work-dir", tmp_path, "--device", "cpu", *args)
    assert result.exit_code == code, result.output
    assert message in result.output
    assert "Traceback" not in result.output
