"""Distributed data-parallel training: process group from torchrun's environment, DDP, SyncBN.

R processes (world size), r this process's rank, local rank its index on its machine.

``torchrun --nproc_per_node R -m detcli train CONFIG`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`init_distributed` reads them and
joins the group (``dist_params.backend`` on CUDA, gloo on CPU). Without them, or with
``WORLD_SIZE=1``, training is one plain process. Rank 0 alone writes logs and checkpoints and
runs evaluation (over the whole validation set, on the unwrapped model); the other ranks wait
at a barrier and receive its metrics, so every rank takes the same decisions (best
checkpoint, early stopping).

A collective that waits longer than ``dist_params.timeout`` seconds (a rank stalled or dead)
fails on every rank instead of blocking them; torchrun then stops the run.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from detcli.errors import ConfigError

log = logging.getLogger(__name__)

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank; ``enabled`` when R > 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Rank and world size from torchrun's environment variables (one process without them)."""
    if not all(v in os.environ for v in ENV_VARS):
        return DistInfo()
    try:
        rank, world, local = (int(os.environ[v]) for v in ENV_VARS)
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                          + ", ".join(f"{v}={os.environ[v]!r}" for v in ENV_VARS)) from None
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(backend: str, device_type: str, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes; no-op for one process.

    ``backend`` is ``dist_params.backend``; on CPU it is replaced by gloo (NCCL needs GPUs).
    ``timeout_s`` (``dist_params.timeout``) bounds how long a collective waits for the others.
    """
    info = env_dist_info()
    if not info.enabled:
        return info
    if dist.is_initialized():  # the caller (a test, a notebook) set it up already
        return DistInfo(dist.get_rank(), dist.get_world_size(), info.local_rank,
                        dist.get_backend())
    if device_type != "cuda" and backend != "gloo":
        log.info("dist_params.backend = %r needs CUDA; this CPU run uses gloo", backend)
        backend = "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=timedelta(seconds=timeout_s))
    log.info("process %d of %d (local rank %d, backend %s, timeout %gs)", info.rank,
             info.world_size, info.local_rank, backend, timeout_s)
    return DistInfo(info.rank, info.world_size, info.local_rank, backend)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (pickled; for small things like metrics)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (``sum``, ``min`` or ``max``) across processes; identity for one."""
    if is_distributed():
        ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when distributed, else as is."""
    if not is_distributed():
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids,
                                               broadcast_buffers=False)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm -> SyncBatchNorm for ``sync_bn = true`` (distributed CUDA runs only)."""
    if not is_distributed():
        log.info("sync_bn = true has no effect in a single process")
        return model
    if device.type != "cuda":
        log.warning("sync_bn = true needs CUDA (SyncBatchNorm has no CPU kernel); keeping "
                    "per-process BatchNorm statistics")
        return model
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


def cleanup() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The command that runs ``det ARGS`` in ``nproc`` processes on this machine."""
    if nproc < 1:
        raise ConfigError(f"--gpus must be >= 1, got {nproc}")
    # this interpreter's torchrun, whatever `torchrun` on PATH belongs to
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "detcli", *args]
