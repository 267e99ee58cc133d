"""Checkpoints: MMDetection's file layout, atomic writes, and loads that never crash on a shape.

A checkpoint is ``torch.save`` of one dict::

    {"meta": {"det_version", "epoch", "iter", "config": resolved TOML text, "classes": [...],
              "time", ...},
     "state_dict": model weights,        # what det test / --init-from load
     "optimizer": ..., "scheduler": ..., "scaler": ...,   # present when given
     "ema": {"train_state_dict": ..., "updates": ...},     # with EMA, see below
     "rng": [{"python", "numpy", "torch", "cuda"}, ...]}     # one per process (rank order)

``meta`` / ``state_dict`` / ``optimizer`` are MMDetection's keys, so its checkpoints load here
and ours load there. ``epoch`` and ``iter`` count what is *done* (``epoch = 3``: three epochs
trained). With EMA, ``state_dict`` holds the averaged weights (what evaluation uses, as
MMEngine's EMAHook saves them) and ``ema.train_state_dict`` the weights the optimizer steps,
which ``--resume`` puts back into the model.

Writes are atomic: the file is written to ``NAME.tmp`` in the same directory, flushed to disk
and renamed over ``NAME``, so a crash mid-write leaves the previous file intact. Loads accept
our files, MMDetection's, and bare state dicts; a missing, unreadable or corrupt file is a
:class:`~detcli.errors.CheckpointError` naming it, and a tensor whose shape differs from the
model's (a new ``num_classes``) is skipped and listed in the :class:`LoadReport`.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from detcli.engine.seed import rng_state
from detcli.errors import CheckpointError

log = logging.getLogger(__name__)

Shape = tuple[int, ...]


def det_version() -> str:
    try:
        from importlib.metadata import version

        return version("detcli")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (or ``model``)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


@dataclass
class LoadReport:
    """What a load did: keys the checkpoint lacked, keys the model lacked, shapes that differ."""

    path: str
    missing: list[str] = field(default_factory=list)  # in the model, not in the checkpoint
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, not in the model
    mismatched: list[tuple[str, Shape, Shape]] = field(default_factory=list)  # (key, ckpt, model)
    meta: dict[str, Any] = field(default_factory=dict)
    num_loaded: int = 0  # tensors copied into the model

    @property
    def exact(self) -> bool:
        """Every model tensor came from the checkpoint, and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def lines(self) -> list[str]:
        """A human summary, one fact per line (the CLI prints it)."""
        out = [f"loaded {self.num_loaded} tensors from {self.path}"]
        for key, ckpt, own in self.mismatched:
            out.append(f"  skipped {key}: shape {list(ckpt)} in the checkpoint, {list(own)} "
                       f"in the model")
        if self.missing:
            out.append(f"  missing in the checkpoint ({len(self.missing)}): "
                       + ", ".join(self.missing))
        if self.unexpected:
            out.append(f"  not used by the model ({len(self.unexpected)}): "
                       + ", ".join(self.unexpected))
        return out


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through ``path.tmp`` + fsync + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    ema: Any = None,
    meta: Mapping[str, Any] | None = None,
    rng: bool | list[dict[str, Any]] = True,
) -> Path:
    """Write a checkpoint of ``model`` (unwrapped from DDP) and whatever else is given.

    ``scheduler``, ``scaler`` and ``ema`` are objects with ``state_dict()``; ``ema`` also has
    ``module`` (the averaged model), whose weights become ``state_dict`` (module docstring).
    ``rng``: True saves this process's generator states, a list saves those given (one per
    rank of a distributed run, gathered by the caller), False none.
    """
    model = unwrap_model(model)
    full_meta = {"det_version": det_version(), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                 **dict(meta or {})}
    ckpt: dict[str, Any] = {"meta": full_meta, "state_dict": model.state_dict()}
    if ema is not None:
        ckpt["state_dict"] = unwrap_model(ema.module).state_dict()
        ckpt["ema"] = {"train_state_dict": model.state_dict(), **ema.state_dict()}
    if optimizer is not None:
        ckpt["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        ckpt["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        ckpt["scaler"] = scaler.state_dict()
    if rng is True:
        ckpt["rng"] = [rng_state()]
    elif rng:
        ckpt["rng"] = list(rng)
    return atomic_save(ckpt, path)


def _torch_load(path: Path, map_location: Any) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # MMDetection's meta may hold numpy scalars or config objects.
        log.warning("%s holds Python objects besides tensors; loading it fully (load only "
                    "checkpoints you trust)", path)
        return torch.load(path, map_location=map_location, weights_only=False)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path``, normalised to have ``meta`` and ``state_dict``.

    A bare state dict becomes ``{"meta": {}, "state_dict": it}``; a ``module.`` prefix (a DDP
    model saved unwrapped by another tool) is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = _torch_load(path, map_location)
    except Exception as exc:  # truncated zip, not a torch file, unpickling error...
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})",
                              hint="the file may be truncated or not a PyTorch checkpoint") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(data).__name__}, not a dict")
    if isinstance(data.get("state_dict"), Mapping):
        ckpt = dict(data)
    elif isinstance(data.get("model"), Mapping):  # torchvision / detectron-style wrapper
        ckpt = {**data, "state_dict": data["model"]}
    elif data and all(isinstance(v, Tensor) for v in data.values()):
        ckpt = {"state_dict": data}
    else:
        raise CheckpointError(f"checkpoint {path} has no state_dict (keys: "
                              f"{', '.join(map(str, list(data)[:8]))})")
    ckpt["state_dict"] = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    ckpt["meta"] = dict(ckpt.get("meta") or {})
    return ckpt


def load_state_dict(model: nn.Module, state: Mapping[str, Tensor], path: str = "<state>",
                    *, strict: bool = False) -> LoadReport:
    """Copy every tensor of ``state`` whose key and shape match into ``model``; list the rest."""
    model = unwrap_model(model)
    own = model.state_dict()
    report = LoadReport(path=path)
    usable: dict[str, Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
    report.missing = [k for k in own if k not in state]
    if strict and not report.exact:
        raise CheckpointError(f"checkpoint {path} does not fit the model exactly:\n"
                              + "\n".join(report.lines()[1:]))
    model.load_state_dict(usable, strict=False)
    report.num_loaded = len(usable)
    return report


def load_checkpoint(path: str | os.PathLike, model: nn.Module, *, strict: bool = False,
                    map_location: Any = "cpu") -> LoadReport:
    """Load the weights of the checkpoint at ``path`` into ``model`` (DDP unwrapped).

    Keys the model lacks, keys the checkpoint lacks and shape-mismatched keys are skipped and
    listed in the report (and logged); ``strict`` makes any of them a CheckpointError.
    """
    ckpt = read_checkpoint(path, map_location)
    report = load_state_dict(model, ckpt["state_dict"], str(path), strict=strict)
    report.meta = ckpt["meta"]
    for line in report.lines():
        log.info("%s", line)
    return report
