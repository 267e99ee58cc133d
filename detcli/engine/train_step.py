"""One optimisation step, and the mixed-precision rules.

N images per batch. The step: move the batch to the device (``non_blocking``: the loader pins
host memory on CUDA) in the network's memory format (channels_last on CUDA by default,
:mod:`detcli.engine.runtime`), ``zero_grad(set_to_none=True)``,
forward the losses under autocast (bf16, or fp16 with a gradient scaler; CUDA only), sum every
``loss*`` term, backward, clip the gradient norm over the parameters that have a gradient
(after unscaling, with fp16), step. It returns the detached loss tensors (and ``grad_norm``
when clipping) without reading any of them, so nothing waits for the device; only fp16's
scaler looks at the gradients on the host, as it must to skip a step with inf.

DDP synchronises gradients in backward only for a forward called through the DDP wrapper, so
the detector's ``loss`` is reached through :class:`LossForward`'s ``forward``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import ConfigError, DataError
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.text import is_loss_key

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str | None, device: torch.device) -> str | None:
    """``amp`` if this device can use it: mixed precision is CUDA-only here (a CPU run with
    ``--amp`` is an error rather than a silent float32 run)."""
    if amp is None:
        return None
    if amp not in AMP_DTYPES:
        raise ConfigError(f"--amp must be bf16 or fp16, not {amp!r}")
    if device.type != "cuda":
        raise ConfigError(f"--amp {amp} needs a CUDA device; this run is on {device.type}",
                          hint="drop --amp: training on the CPU runs in float32")
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--amp bf16 is not supported by this GPU", hint="use --amp fp16")
    return amp


class LossForward(nn.Module):
    """``forward(images, targets) = detector.loss(...)``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: ImageBatch, targets: DetTargets) -> dict[str, Tensor]:
        return self.detector.loss(images, targets)


class TrainStep:
    """Calls ``module(images, targets)`` and steps ``optimizer``; see the module docstring."""

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, *,
                 device: torch.device, amp: str | None = None, scaler: Any = None,
                 grad_clip: tuple[float, float] | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.module = module
        self.optimizer = optimizer
        self.device = device
        self.amp_dtype = AMP_DTYPES[amp] if amp else None
        self.scaler = scaler
        self.grad_clip = grad_clip  # (max_norm, norm_type)
        self.memory_format = memory_format  # of the images, as the network's weights

    def __call__(self, images: ImageBatch, targets: DetTargets | None) -> dict[str, Tensor]:
        if targets is None:
            raise DataError("a training batch has no GT: the train pipeline must Collect "
                            "gt_bboxes and gt_labels")
        images = images.to(self.device, non_blocking=True)
        if self.memory_format is not torch.contiguous_format:
            images = replace(images, tensor=images.tensor.contiguous(
                memory_format=self.memory_format))
        targets = targets.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype is not None):
            losses = self.module(images, targets)
        loss = sum(v for k, v in losses.items() if is_loss_key(k))
        out = {k: v.detach() for k, v in losses.items()}
        out["loss"] = loss.detach()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"]
                      if p.grad is not None]
            max_norm, norm_type = self.grad_clip
            out["grad_norm"] = nn.utils.clip_grad_norm_(params, max_norm,
                                                        norm_type=norm_type).detach()
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return out
