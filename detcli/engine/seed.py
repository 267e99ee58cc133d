"""Seeding and random-number-generator state: what makes a run, and a resumed run, repeatable.

Four generators feed training: Python's ``random`` and numpy's global state, torch's CPU
generator and, where there is one, each CUDA device's. :func:`set_random_seed` seeds them all;
:func:`rng_state` captures them as plain data (lists, ints, tensors: a checkpoint stays
loadable with ``torch.load(weights_only=True)``) and :func:`set_rng_state` puts them back.
Each process of a distributed run has its own states; a checkpoint holds one per rank.

The data loader's own generator is reseeded every epoch from :func:`epoch_seed`, so the order
of an epoch depends on (seed, epoch, rank) alone. The augmentations of a training sample draw
inside :func:`seeded_draws` from :func:`sample_seed` (seed, epoch, dataset index): the same
whichever process or loader worker loads the sample, and whatever was loaded before it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
from typing import Any, Iterator

import numpy as np
import torch

log = logging.getLogger(__name__)

_SEED_MODULUS = 2**31 - 1  # torch and numpy both accept seeds below this


def set_random_seed(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (every device); ``deterministic`` also asks torch for
    deterministic kernels (slower, and an error where an op has none)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        log.info("deterministic algorithms on (seed %d)", seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed of the data loader's generator for ``epoch`` on process ``rank``."""
    return (seed * 1_000_003 + epoch * 7_919 + rank) % _SEED_MODULUS


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the random draws that load sample ``index`` in ``epoch`` (a 32-bit int)."""
    return int(np.random.SeedSequence([seed % 2**32, epoch, index]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_draws(seed: int) -> Iterator[None]:
    """Run a block with python's ``random``, numpy's global state and torch's CPU generator
    seeded with ``seed``; put back the states they had before (CUDA generators untouched)."""
    py, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)


def rng_state() -> dict[str, Any]:
    """Every global generator's state, as data a weights-only ``torch.load`` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> list[str]:
    """Restore what :func:`rng_state` captured; returns the names of the generators restored."""
    restored = []
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        restored.append("python")
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["kind"], np.asarray(s["keys"], dtype=np.uint32), s["pos"],
                             s["has_gauss"], s["cached_gaussian"]))
        restored.append("numpy")
    if "torch" in state:
        torch.set_rng_state(state["torch"])
        restored.append("torch")
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
            restored.append("cuda")
        else:
            log.warning("the checkpoint has CUDA generator states of %d devices, this machine "
                        "has %d: CUDA generators not restored", len(cuda), torch.cuda.device_count())
    return restored


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (evaluation, a progress display) without moving any global generator."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
