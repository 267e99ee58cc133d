"""Three ways a run starts from a checkpoint, each saying exactly what it restores.

* **resume** (``--resume PATH``, ``--resume auto`` = ``work_dir/latest.pth``, or the config's
  ``resume_from``): the model's weights, optimizer, lr schedule, fp16 grad scaler, EMA,
  epoch and iteration, best score, hook counters and the random generators. The run goes
  on exactly where it stopped: on CPU its losses equal an uninterrupted run's bit for bit.
  A checkpoint that does not fit the model exactly cannot be resumed.
* **extend**: a resume whose checkpoint finished its schedule (``epoch == max_epochs``) while
  the config now asks for more (``--set runner.max_epochs=N``) trains the extra epochs. With
  the same (or a smaller) maximum the run is already finished and nothing is trained.
* **init from** (``--init-from PATH`` or ``load_from``): weights only, into a fresh run
  (epoch 0, new optimizer and schedule). Tensors whose shape differs (a new ``num_classes``),
  and keys either side lacks, are skipped and listed. ``torchvision://fasterrcnn_resnet50_fpn``
  takes torchvision's COCO-trained Faster R-CNN, converted to det's layout, its box predictor
  picked by the training set's class names (:mod:`detcli.models.torchvision_weights`).

``--resume`` wins over ``load_from`` (and says so); ``--resume`` together with
``--init-from`` is an error. ``--resume auto`` with no ``latest.pth`` starts a new run and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.engine.checkpoint import (
    LoadReport,
    load_checkpoint,
    load_state_dict,
    read_checkpoint,
    unwrap_model,
)
from detcli.engine.hooks.checkpoint_hook import LATEST
from detcli.errors import ConfigError, TrainingError
from detcli.models.pretrained import TORCHVISION_PREFIX
from detcli.models.torchvision_weights import torchvision_detector_state

log = logging.getLogger(__name__)


@dataclass
class RestoreReport:
    """What a run took from a checkpoint before its first iteration."""

    kind: str  # "resume", "extend", "init_from" or "new"
    path: str | None = None
    restored: list[str] = field(default_factory=list)  # what came back, one item each
    notes: list[str] = field(default_factory=list)  # what did not, and why
    load: LoadReport | None = None  # the weights load, for init_from
    already_finished: bool = False

    def lines(self) -> list[str]:
        titles = {"resume": "resuming from", "extend": "extending the finished run of",
                  "init_from": "initialising weights from", "new": "new run"}
        head = f"{titles[self.kind]} {self.path}" if self.path else titles[self.kind]
        out = [head] + [f"  restored {item}" for item in self.restored]
        if self.load is not None:
            out += self.load.lines()[1:]
        return out + [f"  note: {note}" for note in self.notes]


def choose_start(resume: str | None, init_from: str | None, cfg: Any,
                 work_dir: Path) -> tuple[str | None, str | None, list[str]]:
    """(checkpoint to resume, weights to load, notes) from the options and the config."""
    notes: list[str] = []
    if resume is not None and init_from is not None:
        raise ConfigError("--resume and --init-from cannot be combined: resuming restores the "
                          "weights too", hint="use --resume to continue a run, --init-from to "
                          "start a new one from weights")
    resume = resume if resume is not None else cfg.resume_from
    init_from = init_from if init_from is not None else cfg.load_from
    if resume == "auto":
        latest = work_dir / LATEST
        if latest.exists():
            resume = str(latest)
        else:
            notes.append(f"nothing to resume in {work_dir} (no {LATEST}): starting a new run")
            resume = None
    if resume is not None and init_from is not None:
        notes.append(f"load_from = {init_from} is not used: resuming restores the weights")
        init_from = None
    return resume, init_from, notes


def init_from_weights(trainer: Any, path: str) -> RestoreReport:
    """Load weights only; everything else starts fresh. ``path`` is a checkpoint file, or
    ``torchvision://NAME`` for a torchvision detector's COCO weights (converted, the box
    predictor picked by the training set's class names)."""
    if path.startswith(TORCHVISION_PREFIX):
        state, notes = torchvision_detector_state(
            path, unwrap_model(trainer.model).state_dict(), trainer.train_dataset.CLASSES)
        load = load_state_dict(trainer.model, state, path)
        for line in load.lines():
            log.info("%s", line)
        report = RestoreReport("init_from", path, load=load)
        report.restored.append(f"weights only: {load.num_loaded} tensors")
        report.notes += notes
        report.notes.append("optimizer, lr schedule, epoch and random generators start fresh")
        return report
    load = load_checkpoint(path, trainer.model)
    report = RestoreReport("init_from", path, load=load)
    report.restored.append(f"weights only: {load.num_loaded} tensors")
    trained = load.meta.get("classes")
    classes = list(trainer.train_dataset.CLASSES)
    if trained is not None and list(trained) != classes:
        report.notes.append(f"the checkpoint was trained on classes {list(trained)}; this run "
                            f"has {classes}")
    report.notes.append("optimizer, lr schedule, epoch and random generators start fresh")
    return report


def _load_training_weights(trainer: Any, ckpt: dict[str, Any], path: str) -> int:
    ema = ckpt.get("ema") or {}
    weights = ema.get("train_state_dict") or ckpt["state_dict"]
    load = load_state_dict(trainer.model, weights, path)
    if not load.exact:
        raise TrainingError(f"{path} does not fit the model, so it cannot be resumed:\n"
                            + "\n".join(load.lines()[1:]),
                            hint=f"resume with the config it was trained with (in its meta), or "
                                 f"start a new run from its weights with --init-from {path}")
    return load.num_loaded


def _restore_optim(trainer: Any, ckpt: dict[str, Any], path: str, report: RestoreReport) -> None:
    try:
        trainer.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as exc:
        raise TrainingError(f"{path}: the optimizer state does not fit this config's optimizer "
                            f"({exc})", hint="resume with the config the run was trained with") from None
    groups = trainer.optimizer.param_groups
    plural = "s" if len(groups) != 1 else ""
    report.restored.append(f"optimizer ({type(trainer.optimizer).__name__}, {len(groups)} "
                           f"parameter group{plural} and its state)")
    if "scheduler" in ckpt:
        trainer.scheduler.load_state_dict(ckpt["scheduler"])
        report.restored.append(f"lr schedule ({trainer.cfg.lr_config.policy}, initial lr "
                               f"{groups[0]['initial_lr']:g})")
    if trainer.scaler is not None and "scaler" in ckpt:
        trainer.scaler.load_state_dict(ckpt["scaler"])
        report.restored.append(f"fp16 grad scaler (scale {trainer.scaler.get_scale():g})")
    elif trainer.scaler is not None:
        report.notes.append("the checkpoint has no fp16 grad scaler state: it starts afresh")
    elif "scaler" in ckpt:
        report.notes.append("the checkpoint's fp16 grad scaler state is not used (no --amp fp16)")


def _restore_extras(trainer: Any, ckpt: dict[str, Any], report: RestoreReport) -> None:
    meta = ckpt["meta"]
    has_ema_hook = trainer.has_ema_hook
    if ckpt.get("ema") and has_ema_hook:
        trainer.resumed_ema = (ckpt["ema"], ckpt["state_dict"])
        report.restored.append(f"EMA weights ({ckpt['ema'].get('updates', 0)} updates)")
    elif ckpt.get("ema"):
        report.notes.append("the checkpoint's EMA weights are not used (no EMAHook in this config)")
    elif has_ema_hook:
        report.notes.append("the checkpoint has no EMA: the average starts from its weights")
    states = meta.get("hooks") or {}
    for hook in trainer.hooks:
        name = type(hook).__name__
        if name in states and hasattr(hook, "load_state_dict"):
            hook.load_state_dict(states[name])
            report.restored.append(f"{name} state {states[name]}")
    if meta.get("best"):
        trainer.state.best = meta["best"]
        best = meta["best"]
        report.restored.append(f"best {best['metric']} = {best['value']:.4f} (epoch {best['epoch']})")
    trainer.state.metrics = meta.get("metrics")
    trainer.state.metrics_iter = trainer.state.iter if meta.get("metrics") else -1
    if ckpt.get("rng"):
        trainer.resumed_rng = ckpt["rng"]
        report.restored.append("random generators (" + ", ".join(ckpt["rng"]) + ") and the "
                               "data order")


def resume_run(trainer: Any, path: str) -> RestoreReport:
    """Restore everything a checkpoint holds; see the module docstring."""
    ckpt = read_checkpoint(path)
    meta = ckpt["meta"]
    if "optimizer" not in ckpt or "epoch" not in meta or "iter" not in meta:
        raise TrainingError(f"{path} holds weights only (no optimizer state, epoch or iteration): "
                            "it cannot be resumed", hint=f"start a new run from its weights with "
                                                         f"--init-from {path}")
    state = trainer.state
    done, limit, unit = ((meta["epoch"], state.max_epochs, "epochs") if state.by_epoch
                         else (meta["iter"], state.max_iters, "iterations"))
    previous = meta.get("max_epochs" if state.by_epoch else "max_iters")
    report = RestoreReport("resume", path)
    if done >= limit:
        report.already_finished = True
        key = "max_epochs" if state.by_epoch else "max_iters"
        report.notes.append(f"the run already finished: {done} of {limit} {unit} trained; to "
                            f"train longer, raise runner.{key} above {done} "
                            f"(--set runner.{key}=N)")
    elif previous is not None and done >= previous:
        report.kind = "extend"
        report.notes.append(f"the checkpoint finished its schedule of {previous} {unit}; "
                            f"continuing to {limit}")
    num = _load_training_weights(trainer, ckpt, path)
    report.restored.append(f"model weights ({num} tensors)")
    _restore_optim(trainer, ckpt, path, report)
    state.epoch, state.iter = int(meta["epoch"]), int(meta["iter"])
    report.restored.append(f"epoch {state.epoch}, iteration {state.iter}")
    _restore_extras(trainer, ckpt, report)
    return report
