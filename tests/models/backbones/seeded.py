"""Seeded weights and inputs for the backbone parity fixture (plain torch: no det, no mmdet).

``tools/mmdet_fixtures/backbones.py`` (run with MMDetection) loads :func:`seeded_state` into
MMDetection's backbone and records its outputs on :func:`seeded_input`; the tests load the same
tensors into det's backbone. So the fixture keeps names, shapes and outputs, not weights.

Each tensor comes from its own generator seeded by (seed, key), so it depends only on its name
and shape. A 1-D ``weight`` is a norm layer's (every conv and linear weight has 2+ dims), and a
``bias`` beside one is that norm's bias. Values: conv weights N(0, 1 / fan_in) (so activations
keep their scale and a deformable conv's offsets are about a pixel), conv biases N(0, 0.05),
norm weights U(0.5, 1.5), norm biases N(0, 0.1), running means N(0, 0.1), running variances
U(0.5, 1.5).
"""

from __future__ import annotations

import hashlib
import math

import torch


def _generator(seed: int, key: str) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def seeded_tensor(key: str, shape: tuple[int, ...], seed: int, norm: bool) -> torch.Tensor:
    """One entry's value; ``norm``: the entry belongs to a norm layer."""
    g = _generator(seed, key)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    if key.endswith("running_mean"):
        return torch.randn(shape, generator=g) * 0.1
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if norm:
        if key.endswith("weight"):
            return torch.rand(shape, generator=g) + 0.5
        return torch.randn(shape, generator=g) * 0.1
    if key.endswith("bias"):
        return torch.randn(shape, generator=g) * 0.05
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return torch.randn(shape, generator=g) * math.sqrt(1.0 / fan_in)


def seeded_state(shapes: dict[str, list[int]], seed: int) -> dict[str, torch.Tensor]:
    """A state dict with these keys and shapes, filled as the module docstring says."""
    out = {}
    for key, shape in shapes.items():
        stem = key.rsplit(".", 1)[0]
        norm = len(shapes.get(f"{stem}.weight", [0, 0])) == 1
        out[key] = seeded_tensor(key, tuple(shape), seed, norm)
    return out


def seeded_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """An input batch (N, 3, H, W) of N(0, 1) values."""
    return torch.randn(shape, generator=_generator(seed, "input"))
