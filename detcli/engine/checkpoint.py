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

Loading never runs code from the file (:mod:`detcli.engine.safe_load`): objects of classes
outside torch's and numpy's plain data (MMEngine's ``HistoryBuffer`` in ``message_hub``, or a
payload) come back as inert placeholders, and the load report lists where. Where det needs real
data -- the file's top level, ``meta``, every ``state_dict`` value -- anything else is a
CheckpointError. :func:`check_finite_weights` refuses NaN and infinite weights for the loads
that evaluate, predict or export.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from detcli.engine.mmdet2_keys import upgrade_mmdet2_keys
from detcli.engine.safe_load import Placeholder, safe_torch_load
from detcli.engine.seed import rng_state
from detcli.errors import CheckpointError, writing
from detcli.zoo.mmdet import checkpoint_file

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
    placeholders: list[tuple[str, str]] = field(default_factory=list)  # (where, class), not built

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
        if self.placeholders:
            out.append(placeholder_line(self.placeholders))
        return out


def placeholder_line(placeholders: list[tuple[str, str]]) -> str:
    """One line naming the objects a load kept as inert placeholders."""
    return (f"  kept as inert placeholders, never built or run ({len(placeholders)}): "
            + ", ".join(f"{where} ({target})" for where, target in placeholders))


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
    """``torch.save(obj)`` to ``path`` through ``path.tmp`` + fsync + rename. A write the file
    system refuses (full, read-only, no permission) is a StorageError; ``path`` is then as it
    was and no ``.tmp`` is left."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with writing(path, "checkpoint", after="; the checkpoints already written are intact"):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as f:
                torch.save(obj, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
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


def _describe(value: Any) -> str:
    if isinstance(value, Placeholder):
        return f"a {value.target} object (not built: det never runs code from a checkpoint)"
    return f"a {type(value).__name__}"


def _mmdet_classes(meta: Mapping[str, Any]) -> Any:
    """MMDetection's class names: 3.x ``meta.dataset_meta.classes``, 2.x ``meta.CLASSES``."""
    dataset_meta = meta.get("dataset_meta")
    classes = (dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else None)
    classes = classes if classes is not None else meta.get("CLASSES")
    if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def _read(path: Path, map_location: Any) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(checkpoint, placeholders): see :func:`read_checkpoint`."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        loaded = safe_torch_load(path, map_location)
    except Exception as exc:  # truncated zip, not a torch file, unpickling error...
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})",
                              hint="the file may be truncated or not a PyTorch checkpoint") from None
    data = loaded.data
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {path} holds {_describe(data)}, not a dict")
    if isinstance(data.get("state_dict"), Mapping):
        ckpt = dict(data)
    elif isinstance(data.get("model"), Mapping):  # torchvision / detectron-style wrapper
        ckpt = {**data, "state_dict": data["model"]}
    elif data and all(isinstance(v, Tensor) for v in data.values()):
        ckpt = {"state_dict": data}
    elif "state_dict" in data:
        raise CheckpointError(f"checkpoint {path}: state_dict is {_describe(data['state_dict'])}, "
                              "not a dict of tensors")
    else:
        raise CheckpointError(f"checkpoint {path} has no state_dict (keys: "
                              f"{', '.join(map(str, list(data)[:8]))})")
    not_tensors = [(k, v) for k, v in ckpt["state_dict"].items() if not isinstance(v, Tensor)]
    if not_tensors:
        key, value = not_tensors[0]
        raise CheckpointError(f"checkpoint {path}: {len(not_tensors)} state_dict value(s) are not "
                              f"tensors; the first, {key}, is {_describe(value)}",
                              hint="a state_dict maps parameter names to tensors; this file was "
                                   "not written by det or MMDetection")
    meta = ckpt.get("meta") or {}
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"checkpoint {path}: meta is {_describe(meta)}, not a dict")
    ckpt["state_dict"] = upgrade_mmdet2_keys(
        {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}, str(path))
    ckpt["meta"] = dict(meta)
    if "classes" not in ckpt["meta"] and _mmdet_classes(meta) is not None:
        ckpt["meta"]["classes"] = _mmdet_classes(meta)
    return ckpt, loaded.placeholders


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict at ``path`` (a file, or ``mmdet://NAME``: its cached, else downloaded,
    file; :func:`detcli.zoo.mmdet.checkpoint_file`), normalised to have ``meta`` and
    ``state_dict``.

    A bare state dict becomes ``{"meta": {}, "state_dict": it}``; a ``module.`` prefix (a DDP
    model saved unwrapped by another tool) is removed; MMDetection 2.x's DETR, Deformable DETR
    and early FCOS key names become 3.x's (:mod:`detcli.engine.mmdet2_keys`); MMDetection's
    class names (``meta.dataset_meta.classes``, ``meta.CLASSES``) become ``meta.classes``. The
    objects the file holds besides plain data stay inert placeholders (module docstring),
    logged here.
    """
    ckpt, placeholders = _read(checkpoint_file(path), map_location)
    if placeholders:
        log.warning("%s:\n%s", path, placeholder_line(placeholders))
    return ckpt


def non_finite_weights(state: Mapping[str, Tensor]) -> list[tuple[str, int, int]]:
    """``(key, NaN count, infinite count)`` of every floating-point tensor of ``state`` that
    holds a NaN or an infinity, in order."""
    bad = []
    for key, value in state.items():
        if not (value.is_floating_point() or value.is_complex()):
            continue
        # A NaN or an infinity makes the sum non-finite, so a finite sum clears the tensor at a
        # tenth of isfinite()'s cost; a non-finite one (or an overflow) is checked exactly.
        if bool(value.sum().isfinite()) or bool(value.isfinite().all()):
            continue
        bad.append((key, int(value.isnan().sum()), int(value.isinf().sum())))
    return bad


def check_finite_weights(state: Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """A CheckpointError naming the first non-finite tensors of ``state`` (from ``path``), if
    any: a model with a NaN weight predicts nothing, and its mAP of 0 or an empty export check
    would look like a result."""
    bad = non_finite_weights(state)
    if not bad:
        return
    shown = ", ".join(f"{key} ({nan} NaN, {inf} infinite of {state[key].numel()})"
                      for key, nan, inf in bad[:5])
    more = f", and {len(bad) - 5} more" if len(bad) > 5 else ""
    raise CheckpointError(f"checkpoint {path} has non-finite weights in {len(bad)} of "
                          f"{len(state)} tensors: {shown}{more}",
                          hint="the run that wrote it diverged; use an earlier checkpoint of it "
                               "(epoch_N.pth), or train again with a lower lr or "
                               "optimizer_config.grad_clip")


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
                    require_finite: bool = False, map_location: Any = "cpu") -> LoadReport:
    """Load the weights of the checkpoint at ``path`` (as :func:`read_checkpoint` names it) into
    ``model`` (DDP unwrapped).

    Keys the model lacks, keys the checkpoint lacks and shape-mismatched keys are skipped and
    listed in the report (and logged); ``strict`` makes any of them a CheckpointError.
    ``require_finite``: a NaN or infinite weight is a CheckpointError
    (:func:`check_finite_weights`), raised before the model is touched.
    """
    ckpt, placeholders = _read(checkpoint_file(path), map_location)
    if require_finite:
        check_finite_weights(ckpt["state_dict"], path)
    report = load_state_dict(model, ckpt["state_dict"], str(path), strict=strict)
    report.meta = ckpt["meta"]
    report.placeholders = placeholders
    for line in report.lines():
        log.info("%s", line)
    return report
