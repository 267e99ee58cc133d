"""Training runs of the tiny RetinaNet: it learns, writes its work dir, stops on NaN and early.

The learning floors come from measuring this exact run (24 synthetic images, 20 epochs of 6
iterations; torch 2.14 on CPU, one or two threads): the mean loss falls from 1.78 in the first
epoch to 0.54 in the last, bbox_mAP goes from 0.03 at epoch 10 to 0.15-0.16 at epoch 20 and
bbox_mAP_50 from 0.09 to 0.38-0.39. The floors leave a margin of 2 to 3.
"""

from __future__ import annotations

import json

import pytest
import torch

from detcli.engine.checkpoint import read_checkpoint
from detcli.engine.hooks import Hook
from detcli.engine.trainer import train_detector
from detcli.errors import ConfigError, TrainingError

pytestmark = pytest.mark.usefixtures("one_thread")

LOSS_DROP = 0.6  # the last epoch's mean loss is below 0.6 x the first's
MAP_FLOOR = 0.05  # bbox_mAP after 20 epochs (measured: 0.15-0.16)
MAP50_FLOOR = 0.15  # bbox_mAP_50 after 20 epochs (measured: 0.38-0.39)


def train_records(result):
    return [r for r in result.history if r["mode"] == "train"]


def test_a_short_run_learns_and_fills_its_work_dir(tiny_config, tmp_path):
    loaded = tiny_config("runner.max_epochs=20", "log_config.interval=3", "evaluation.interval=10",
                         "checkpoint_config.max_keep_ckpts=2")
    work = tmp_path / "work"
    result = train_detector(loaded, work_dir=work, device="cpu")

    assert (result.stop_reason, result.epoch) == ("finished", 20)
    ipe = result.iter // 20
    records = train_records(result)
    first = [r["loss"] for r in records if r["epoch"] == 1]
    last = [r["loss"] for r in records if r["epoch"] == 20]
    assert sum(last) / len(last) < LOSS_DROP * sum(first) / len(first)
    evals = [r for r in result.history if r["mode"] == "val"]
    assert [r["epoch"] for r in evals] == [10, 20]
    assert evals[1]["bbox_mAP"] > max(evals[0]["bbox_mAP"], MAP_FLOOR)
    assert evals[1]["bbox_mAP_50"] > MAP50_FLOOR

    # metrics.jsonl: one line per log interval and per evaluation
    lines = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == len(result.history)
    train_line = lines[0]
    assert {"epoch", "iter", "lr", "loss_cls", "loss_bbox", "loss", "grad_norm", "time",
            "data_time", "img_per_s", "memory", "eta_s"} <= set(train_line)
    assert (train_line["epoch"], train_line["iter"]) == (1, 3)
    assert lines[-1]["mode"] == "val" and lines[-1]["bbox_mAP"] == evals[1]["bbox_mAP"]
    assert "per_class" not in lines[-1]
    # config.toml: resolved, with origins; train.log: the text lines
    config_text = (work / "config.toml").read_text()
    assert "max_epochs = 20" in config_text and "# --set runner.max_epochs=20" in config_text
    log_text = (work / "train.log").read_text()
    assert f"Epoch [20][{ipe}/{ipe}]" in log_text and "Epoch(val) [20]" in log_text
    # checkpoints: max_keep_ckpts = 2, latest names the newest, best holds the best eval
    names = sorted(p.name for p in work.glob("*.pth"))
    assert names == ["best_bbox_mAP.pth", "epoch_19.pth", "epoch_20.pth", "latest.pth"]
    latest = read_checkpoint(work / "latest.pth")
    assert latest["meta"]["epoch"] == 20 and latest["meta"]["iter"] == result.iter
    assert latest["meta"]["config"] == config_text
    assert latest["meta"]["classes"] == ["square", "circle", "triangle"]
    assert result.best == {"metric": "bbox_mAP", "value": evals[1]["bbox_mAP"], "epoch": 20,
                           "iter": result.iter, "path": str(work / "best_bbox_mAP.pth")}
    assert read_checkpoint(work / "best_bbox_mAP.pth")["meta"]["epoch"] == 20


class PoisonAt(Hook):
    """Fills the box regressor with NaN before iteration ``at`` (1-based)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def before_iter(self, trainer) -> None:
        if trainer.state.iter + 1 == self.at:
            with torch.no_grad():
                trainer.model.bbox_head.retina_reg.weight.fill_(float("nan"))


def test_a_nan_loss_stops_naming_term_and_iteration(tiny_config, tmp_path):
    loaded = tiny_config("log_config.interval=4", "data.val=false")
    with pytest.raises(TrainingError) as info:
        train_detector(loaded, work_dir=tmp_path, device="cpu", callbacks=[PoisonAt(3)])
    message = str(info.value)
    assert message.startswith("loss_bbox became NaN or infinite at iteration 3 (epoch 1); "
                              "training stopped.")
    assert f"weights at iteration 4 are in {tmp_path / 'nan_iter_3.pth'}" in message
    saved = read_checkpoint(tmp_path / "nan_iter_3.pth")
    assert saved["meta"]["iter"] == 4
    assert torch.isnan(saved["state_dict"]["bbox_head.retina_reg.weight"]).all()


def test_early_stopping_ends_the_run_and_saves_its_end(tiny_config, tmp_path):
    hooks = ('custom_hooks=[{type="NumClassCheckHook"}, '
             '{type="EarlyStoppingHook", monitor="bbox_mAP", patience=1, min_delta=1.0}]')
    loaded = tiny_config("runner.max_epochs=5", "checkpoint_config.interval=5", hooks)
    result = train_detector(loaded, work_dir=tmp_path, device="cpu")
    assert result.epoch == 2  # epoch 1 sets the best, epoch 2 cannot beat it by 1.0
    assert result.stop_reason.startswith("early stopping: bbox_mAP has not improved")
    assert sorted(p.name for p in tmp_path.glob("epoch_*.pth")) == ["epoch_2.pth"]
    assert read_checkpoint(tmp_path / "latest.pth")["meta"]["hooks"]["EarlyStoppingHook"]["wait"] == 1


def test_iteration_based_runs_count_iterations(tiny_config, tmp_path):
    loaded = tiny_config('runner={type="IterBasedRunner", max_iters=8}',
                         "checkpoint_config.interval=4", "evaluation.interval=8",
                         "log_config.interval=4", "lr_config.step=[6]")
    result = train_detector(loaded, work_dir=tmp_path, device="cpu")
    assert result.iter == 8 and result.stop_reason == "finished"
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == ["iter_4.pth", "iter_8.pth"]
    assert [r["iter"] for r in result.history if r["mode"] == "val"] == [8]
    # logged every 4 iterations and at the end of each pass over the data (6 iterations)
    assert [r["iter"] for r in train_records(result)] == [4, 6, 8]
    # lr of the logged iteration: warmup 1 - (1 - 3/5) * 0.9 = 0.64, then x0.1 from iteration 6
    lrs = [r["lr"] for r in train_records(result)]
    assert lrs == pytest.approx([0.00064, 0.001, 0.0001])


def test_configuration_mistakes_stop_before_training(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match="--amp bf16 needs a CUDA device; this run is on cpu"):
        train_detector(tiny_config(), work_dir=tmp_path, device="cpu", amp="bf16")
    with pytest.raises(ConfigError, match="disagree on the number of classes"):
        train_detector(tiny_config("model.bbox_head.num_classes=5"), work_dir=tmp_path,
                       device="cpu")
    assert not list(tmp_path.glob("*.pth"))


def _copy_with_missing_image(synth, tmp_path):
    """The session's training images, copied, with the first image file deleted."""
    import shutil

    images = tmp_path / "train"
    shutil.copytree(synth.img_prefix("train"), images)
    missing = sorted(images.iterdir())[0]
    missing.unlink()
    return images, missing


def test_missing_training_image_stops_before_the_first_step(tiny_config, synth, tmp_path):
    from detcli.errors import DataError

    images, missing = _copy_with_missing_image(synth, tmp_path)
    loaded = tiny_config(f'data.train.img_prefix="{images}/"')
    work = tmp_path / "work"
    with pytest.raises(DataError) as info:
        train_detector(loaded, work_dir=work, device="cpu")
    assert "1 problem in the training data" in str(info.value)
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    assert not list(work.glob("*.pth"))  # nothing trained


def test_skip_mode_lists_the_problems_in_the_work_dir_and_trains(tiny_config, synth, tmp_path):
    images, missing = _copy_with_missing_image(synth, tmp_path)
    loaded = tiny_config(f'data.train.img_prefix="{images}/"', 'data.on_bad_image="skip"',
                         "runner.max_epochs=1", "evaluation.interval=5")
    work = tmp_path / "work"
    result = train_detector(loaded, work_dir=work, device="cpu")
    assert result.epoch == 1
    listed = (work / "dataset_problems.txt").read_text()
    assert "missing_file" in listed and str(missing) in listed
