"""DINO killed and resumed equals the run never interrupted, bit for bit, denoising included.

``presets/dino_tiny_synth.toml`` in the engine tests' tiny setting (:mod:`tests.engine.conftest`:
24 synthetic images at 128 pixels, batch 4, random flips), by the method of
:mod:`tests.engine.test_resume_exact` (whose driver trains the killed run): 14 iterations of 6
per epoch, a checkpoint every 4, killed with SIGKILL after iteration 10 and resumed from
iter_8.pth, two batches into the second epoch. Every iteration's losses -- the matching
queries', the encoder's and the denoising queries' ``dn_loss_*`` / ``d0.dn_loss_*``, which
depend on the noise ``CdnQueryGenerator`` draws -- lr and gradient norm must equal the straight
run's, and the final weights and AdamW state too, bit for bit.

The noise comes from the generator's own ``torch.Generator``, reseeded on every call from
Python's ``random``, whose state a checkpoint saves and a resume restores
(``models/transformer/denoising.py``, ``engine/seed.py``). The second test plants the bug the
first guards against: the resume restores every generator but Python's. Then the first resumed
iteration's matching and encoder losses still equal the straight run's (the matching queries
see no denoising query, and the weights are the same), while its denoising losses differ: the
first test fails with it.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from detcli.config.loader import load_config
from detcli.engine import trainer
from detcli.engine.trainer import train_detector
from tests.engine.conftest import ROOT, TINY_PRESET, tiny_config_text
from tests.engine.test_resume_exact import ITER_RUN, assert_same_run, run_killed, train_records

pytestmark = pytest.mark.usefixtures("one_thread")

PRESET = ROOT / "presets" / "dino_tiny_synth.toml"
TERMS = ("loss_cls", "loss_bbox", "loss_iou")
MATCHING_KEYS = {f"{layer}{t}" for layer in ("", "d0.", "enc_") for t in TERMS}  # 2 layers, encoder
DN_KEYS = {f"{layer}dn_{t}" for layer in ("", "d0.") for t in TERMS}  # the denoising queries'
LOSS_KEYS = MATCHING_KEYS | DN_KEYS  # DINO's 15


def dino_config_text(synth) -> str:
    """The tiny setting on the DINO preset (as tests/engine/test_train_dino.py)."""
    text = tiny_config_text(synth).replace(str(TINY_PRESET), str(PRESET))
    for retina_only in ("base_channels = 8", "out_channels = 32",
                        "feat_channels = 32\nstacked_convs = 1"):
        assert f"]\n{retina_only}\n" in text
        text = text.replace(f"]\n{retina_only}\n", "]\n")  # RetinaNet's sizes, not DINO's keys
    return text.replace("weight_decay = 0.05", "weight_decay = 0.0001")


@pytest.fixture(scope="module")
def dino_runs(synth, tmp_path_factory):
    """(config, straight work dir, killed work dir), made once for the module: the straight
    run done, the killed run stopped after iteration 10 with iter_8.pth its last checkpoint."""
    root = tmp_path_factory.mktemp("dino-resume")
    config = root / "dino.toml"
    config.write_text(dino_config_text(synth))
    assert load_config(config, ITER_RUN).cfg.model.type == "DINO"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_detector(load_config(config, ITER_RUN), work_dir=root / "straight", device="cpu")
    finally:
        torch.set_num_threads(threads)
    run_killed(config, root / "killed", ITER_RUN)
    return config, root / "straight", root / "killed"


@pytest.fixture
def killed_dino(dino_runs, tmp_path):
    """``dino_runs`` with a copy of the killed work dir for this test to resume."""
    config, straight, killed = dino_runs
    copy = shutil.copytree(killed, tmp_path / "killed", symlinks=True)
    return config, straight, copy


def test_dino_killed_and_resumed_equals_uninterrupted(killed_dino):
    config, straight, killed = killed_dino
    resumed = train_detector(load_config(config, ITER_RUN), work_dir=killed, device="cpu",
                             resume="auto")
    lines = resumed.restored.lines()
    assert "  restored epoch 1, iteration 8" in lines
    assert "  restored data position (epoch 2 from batch 3 of 6)" in lines
    records = train_records(straight)
    assert LOSS_KEYS <= set(records[0])
    for r in records:  # the total that was backpropagated holds all 15, the denoising ones too
        assert r["loss"] == pytest.approx(sum(r[k] for k in LOSS_KEYS), rel=1e-6)
    # the noise differs from step to step: each iteration draws afresh
    assert len({r["dn_loss_bbox"] for r in records}) == len(records)
    assert_same_run(straight, killed, "iter_14.pth")


def test_resume_without_pythons_random_draws_other_denoising_noise(killed_dino, monkeypatch):
    config, straight, killed = killed_dino

    def all_but_python(state):
        return real({k: v for k, v in state.items() if k != "python"})

    real = trainer.set_rng_state
    monkeypatch.setattr(trainer, "set_rng_state", all_but_python)  # the planted bug
    train_detector(load_config(config, ITER_RUN), work_dir=killed, device="cpu", resume="auto")
    expected = {r["iter"]: r for r in train_records(straight)}
    got = {r["iter"]: r for r in train_records(killed)}
    assert [got[i] == expected[i] for i in range(1, 15)] == [True] * 8 + [False] * 6
    first = got[9]  # iteration 9: the same weights and images, other noise
    assert {k: first[k] for k in MATCHING_KEYS} == {k: expected[9][k] for k in MATCHING_KEYS}
    assert all(first[k] != expected[9][k] for k in [*DN_KEYS, "loss", "grad_norm"])
    # the denoising losses are trained on: from iteration 10 the weights differ
    assert all(got[i]["loss_cls"] != expected[i]["loss_cls"] for i in range(10, 15))
