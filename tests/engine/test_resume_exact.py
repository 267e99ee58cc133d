"""A run killed with SIGKILL and resumed with ``--resume auto`` equals one never interrupted.

Each test trains the tiny RetinaNet (:mod:`tests.engine.conftest`; random flips on, so the
augmentations draw random numbers) three times: straight through; in a subprocess that kills
itself with SIGKILL after some iteration (no handler, no ``after_run``, nothing flushed: the last
checkpoint is a few iterations back); and resumed from that work dir with ``resume="auto"``.
The resumed work dir's ``metrics.jsonl`` must give the same losses, lr and gradient norm at
every iteration as the straight run's, and the final checkpoints the same tensors, bit for bit.

Modes: one process with ``workers_per_gpu = 0``; two loader workers (persistent or not), where
which worker loads a batch changes after the resume; and two gloo processes through torchrun,
where each rank has its own random generators (Faster R-CNN, whose RoI sampling draws from
torch's generator of its rank).

Run as a module (``python -m tests.engine.test_resume_exact CONFIG WORK_DIR KILL_AT [KEY=VALUE
...]``), this file is the training script of the killed and resumed runs: ``KILL_AT`` 0 never
kills, and ``resume`` is always ``auto``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from detcli.config.loader import load_config
from detcli.engine.checkpoint import read_checkpoint
from detcli.engine.hooks import Hook
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT

TIMING = ("time", "data_time", "img_per_s", "memory", "eta_s")  # the rest must be equal
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# 6 iterations per epoch (22 images at batch 4); checkpoints every 4: killed after iteration 10,
# the run restarts from iter_8.pth, 2 batches into its second epoch
ITER_RUN = ['runner={type="IterBasedRunner", max_iters=14}', "checkpoint_config.interval=4",
            "data.val=false"]
KILL_AT = 10


class KillAt(Hook):
    """SIGKILL this process after iteration ``at``, once every other hook there has run."""

    priority = 100

    def __init__(self, at: int) -> None:
        self.at = at

    def after_iter(self, trainer) -> None:
        if trainer.state.iter == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def driver(config: str, work_dir: str, kill_at: int, overrides: list[str]) -> None:
    torch.set_num_threads(1)
    callbacks = [KillAt(kill_at)] if kill_at else []
    train_detector(load_config(config, overrides), work_dir=work_dir, device="cpu",
                   resume="auto", callbacks=callbacks)


def run_killed(config: Path, work_dir: Path, overrides: list[str], *, nproc: int = 1) -> None:
    """The driver in a subprocess (torchrun for ``nproc`` > 1), killed after KILL_AT."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone",
                 f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    command = [*launcher, "-m", "tests.engine.test_resume_exact", str(config), str(work_dir),
               str(KILL_AT), *overrides]
    run = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0, "the run was not killed"
    if nproc == 1:
        assert run.returncode == -signal.SIGKILL, run.stderr[-3000:]
    names = {p.name for p in work_dir.iterdir()}
    assert {"iter_4.pth", "iter_8.pth"} <= names and "iter_12.pth" not in names, (
        sorted(names), run.stderr[-3000:])


def run_torchrun(config: Path, work_dir: Path, overrides: list[str], nproc: int = 2) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "tests.engine.test_resume_exact", str(config),
               str(work_dir), "0", *overrides]
    run = subprocess.run(command, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]


def train_records(work_dir: Path) -> list[tuple]:
    lines = (work_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in r.items() if k not in TIMING} for r in map(json.loads, lines)
            if r["mode"] == "train"]


def assert_same_run(straight: Path, resumed: Path, last: str) -> None:
    expected = train_records(straight)
    assert [r["iter"] for r in expected] == list(range(1, 15))  # one record per iteration
    assert {"lr", "loss", "grad_norm"} < set(expected[0])
    assert train_records(resumed) == expected  # the work after iter_8 was redone, not repeated
    a, b = read_checkpoint(straight / last), read_checkpoint(resumed / last)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert differ == []
    for group_a, group_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in group_a)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("workers", ["data.workers_per_gpu=0",
                                     "data.workers_per_gpu=2",
                                     "data.workers_per_gpu=2 data.persistent_workers=true"])
def test_killed_and_resumed_equals_uninterrupted(tiny_config_path, tmp_path, workers):
    overrides = [*ITER_RUN, *workers.split()]
    straight = tmp_path / "straight"
    train_detector(load_config(tiny_config_path, overrides), work_dir=straight, device="cpu")
    killed = tmp_path / "killed"
    run_killed(tiny_config_path, killed, overrides)
    resumed = train_detector(load_config(tiny_config_path, overrides), work_dir=killed,
                             device="cpu", resume="auto")
    lines = resumed.restored.lines()
    assert lines[0] == f"resuming from {killed / 'latest.pth'}"
    assert "  restored epoch 1, iteration 8" in lines
    assert "  restored data position (epoch 2 from batch 3 of 6)" in lines
    assert_same_run(straight, killed, "iter_14.pth")


@pytest.mark.usefixtures("one_thread")
def test_two_gloo_processes_killed_and_resumed_equal_uninterrupted(synth, tmp_path):
    from tests.engine.test_train_faster_rcnn import faster_rcnn_config_text

    config = tmp_path / "faster_rcnn_tiny.toml"
    config.write_text(faster_rcnn_config_text(synth))
    overrides = [*ITER_RUN, "data.samples_per_gpu=2"]  # 2 x 2 images: 6 iterations per epoch
    run_torchrun(config, tmp_path / "straight", overrides)
    run_killed(config, tmp_path / "killed", overrides, nproc=2)
    rng = read_checkpoint(tmp_path / "killed" / "iter_8.pth")["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["torch"], rng[1]["torch"])  # one per rank
    run_torchrun(config, tmp_path / "killed", overrides)
    log = (tmp_path / "killed" / "train.log").read_text()
    assert "random generators (python, numpy, torch) of each of the 2 processes" in log
    assert_same_run(tmp_path / "straight", tmp_path / "killed", "iter_14.pth")


if __name__ == "__main__":
    driver(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
