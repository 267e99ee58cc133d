"""The live training display at 80 and 120 columns (bar, iterations, elapsed, live ETA, the loss
line, the evaluation's own bar), and Ctrl-C during `det train` saying how to continue."""

from __future__ import annotations

import io
import re
import shlex
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from detcli.cli import train_display
from detcli.cli.main import app
from detcli.cli.train_display import RichProgress
from detcli.data.synth import make_synthetic_dataset
from tests.engine.conftest import tiny_config_text

RECORD = {"mode": "train", "loss": 0.8123, "loss_cls": 0.5, "loss_bbox": 0.3123, "lr": 0.01,
          "img_per_s": 32.0, "memory": 812.0}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def fake_trainer(max_epochs=4, iters_per_epoch=10):
    state = SimpleNamespace(by_epoch=True, epoch=0, max_epochs=max_epochs, iter=0,
                            max_iters=max_epochs * iters_per_epoch)
    return SimpleNamespace(state=state, dist=SimpleNamespace(is_main=True))


def rendered(display: RichProgress, width: int) -> list[str]:
    console = Console(width=width, record=True, force_terminal=True, file=io.StringIO())
    console.print(display.renderable())
    return [line.rstrip() for line in console.export_text().splitlines() if line.strip()]


@pytest.fixture
def display():
    clock = Clock()
    shown = RichProgress(console=Console(force_terminal=True, file=io.StringIO(), width=100),
                         clock=clock)
    trainer = fake_trainer()
    shown.before_run(trainer)
    for _ in range(12):  # 12 of 40 iterations at 1 s each: 12 s elapsed, 28 s left
        clock.now += 1.0
        trainer.state.iter += 1
        trainer.state.epoch = trainer.state.iter // 10
        shown.after_iter(trainer)
    shown.on_log(trainer, RECORD)
    yield shown, trainer
    shown.close()


@pytest.mark.parametrize("width", [80, 120])
def test_the_bar_line_fits_with_iterations_elapsed_and_eta(display, width):
    shown, _ = display
    lines = rendered(shown, width)
    bar = lines[0]
    assert len(bar) <= width
    assert bar.startswith("epoch 2/4 ")
    assert "━" in bar and "12/40" in bar
    assert bar.endswith("0:00:12 eta 0:00:28")  # elapsed, then the live ETA
    assert lines[1].startswith("loss 0.8123  cls 0.5000  bbox 0.3123  lr 1.00e-02  32.0 img/s")


def test_eta_is_live_between_log_records(display):
    shown, trainer = display
    shown.clock.now += 4.0  # a slow iteration: 16 s for 13, so 27 left take 33 s
    trainer.state.iter += 1
    shown.after_iter(trainer)
    assert rendered(shown, 100)[0].endswith("0:00:16 eta 0:00:33")


def test_evaluation_shows_its_own_bar_then_goes(display):
    shown, trainer = display
    shown.on_eval_progress(trainer, 3, 8)
    lines = rendered(shown, 80)
    assert lines[1].startswith("evaluating") and "3/8" in lines[1] and "━" in lines[1]
    shown.on_eval(trainer, {"bbox_mAP": 0.5, "bbox_mAP_50": 0.7})
    assert not any("evaluating" in line for line in rendered(shown, 80))


def test_off_a_terminal_it_shows_nothing():
    shown = RichProgress(console=Console(force_terminal=False, file=io.StringIO()))
    trainer = fake_trainer()
    shown.before_run(trainer)
    assert shown.task is None and shown.where == (0, 0, 40)
    shown.close()


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-interrupt")
    synth = make_synthetic_dataset(root / "synth", num_train=8, num_val=2, image_size=96, seed=1)
    path = root / "tiny.toml"
    path.write_text(tiny_config_text(synth))
    return path


def test_ctrl_c_says_how_to_continue_and_that_command_continues(config, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    work_dir = tmp_path / "run"
    stop_after = 3  # iterations: the first epoch (2 iterations) is saved, then Ctrl-C

    def interrupt(self, trainer):
        if trainer.state.iter == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_display.RichProgress, "after_iter", interrupt)
    args = ["train", str(config), "--work-dir", str(work_dir), "--device", "cpu",
            "--set", "runner.max_epochs=2"]
    try:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 130, result.output
        assert "interrupted in epoch 2, after iteration 3 of 4" in result.stderr
        assert f"the checkpoints in {work_dir} keep the run" in result.stderr
        line = next(li for li in result.stderr.splitlines() if li.startswith("continue with: "))
        command = shlex.split(line.removeprefix("continue with: "))
        assert command == ["det", "train", str(config), "--resume", "auto", "--work-dir",
                           str(work_dir), "--device", "cpu", "--set", "runner.max_epochs=2"]
        monkeypatch.undo()
        again = CliRunner().invoke(app, command[1:])  # the printed command, as given
        assert again.exit_code == 0, again.output
        assert "restored epoch 1, iteration 2" in again.output  # from the saved epoch
        assert "(epoch 2, iteration 4)" in again.stdout
    finally:
        torch.set_num_threads(threads)
