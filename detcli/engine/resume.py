"""Three ways a run starts from a checkpoint, each saying exactly what it restores.

* **resume** (``--resume PATH``, ``--resume auto``, or the config's ``resume_from``): the
  model's weights, optimizer, lr schedule, fp16 grad scaler, EMA, epoch and iteration, the
  data position (the epoch goes on from its next batch), best score, hook counters and every
  rank's random generators. The run goes on exactly where it stopped: on CPU its losses and
  weights equal an uninterrupted run's bit for bit, with loader workers and with several
  processes. A checkpoint written before its epoch's evaluation (they all are) marks it
  pending, and the resumed run evaluates first. A checkpoint that does not fit the model
  exactly cannot be resumed (:class:`~detcli.errors.CheckpointError`).
* ``--resume auto`` takes the work dir's ``latest.pth``; when that is missing, a dangling
  link, unreadable, or older than a periodic checkpoint, the newest ``epoch_N.pth`` /
  ``iter_N.pth`` that loads, saying which and why. With no checkpoint at all it starts a new
  run and says so; with checkpoints none of which loads it stops.
* **new run**: in a work dir that already holds checkpoints (``*.pth``) it is refused, as
  it would overwrite them (:class:`~detcli.errors.ConfigError`; resume, or choose another
  ``--work-dir``).
* **extend**: a resume whose checkpoint finished its schedule (``epoch == max_epochs``) while
  the config now asks for more (``--set runner.max_epochs=N``) trains the extra epochs. With
  the same (or a smaller) maximum the run is already finished and nothing is trained.
* **init from** (``--init-from PATH`` or ``load_from``): weights only, into a fresh run
  (epoch 0, new optimizer and schedule). Tensors whose shape differs (a new ``num_classes``),
  and keys either side lacks, are skipped and listed; a checkpoint none of whose tensors
  fits is an error naming both sides' key prefixes. ``torchvision://fasterrcnn_resnet50_fpn``
  takes torchvision's COCO-trained Faster R-CNN, converted to det's layout, its box predictor
  picked by the training set's class names (:mod:`detcli.models.torchvision_weights`).

``--resume`` wins over ``load_from`` (and says so); ``--resume`` together with
``--init-from`` is an error.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from detcli.engine import distributed as D
from detcli.engine.checkpoint import load_state_dict, read_checkpoint, unwrap_model
from detcli.engine.context import TrainContext
from detcli.engine.hooks.checkpoint_hook import LATEST
from detcli.engine.hooks.ema_hook import EMAHook
from detcli.engine.state import RestoreReport
from detcli.errors import CheckpointError, ConfigError, DetError
from detcli.models.pretrained import TORCHVISION_PREFIX
from detcli.models.torchvision_weights import torchvision_detector_state

log = logging.getLogger(__name__)


@dataclass
class StartPlan:
    """How a run starts: the checkpoint to resume, or the weights to load, or neither."""

    resume: str | None = None
    init_from: str | None = None
    notes: list[str] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None  # ``resume`` as read while choosing it

    def without_checkpoint(self) -> StartPlan:
        return replace(self, checkpoint=None)


_PERIODIC = re.compile(r"^(epoch|iter)_(\d+)\.pth$")


def existing_checkpoints(work_dir: Path) -> list[str]:
    """Names of the ``*.pth`` entries in ``work_dir`` (dangling links too), sorted."""
    if not work_dir.is_dir():
        return []
    return sorted(e.name for e in os.scandir(work_dir) if e.name.endswith(".pth"))


def _resumable(path: Path) -> dict[str, Any]:
    """The checkpoint at ``path`` if a run can resume from it, else CheckpointError."""
    ckpt = read_checkpoint(path)
    meta = ckpt["meta"]
    if "optimizer" not in ckpt or "epoch" not in meta or "iter" not in meta:
        raise CheckpointError(f"{path} holds weights only (no optimizer state, epoch or "
                              "iteration): it cannot be resumed",
                              hint=f"start a new run from its weights with --init-from {path}")
    return ckpt


def _reason(exc: CheckpointError) -> str:
    return str(exc).splitlines()[0]


def find_resumable(work_dir: Path, prefix: str) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest checkpoint of ``work_dir`` a run can resume from, as (path, checkpoint,
    notes on what was skipped and why); None when the work dir holds no checkpoint at all.

    ``latest.pth`` unless it is missing, a dangling link, unreadable, not resumable or older
    than a ``{prefix}_N.pth`` next to it; else the ``{prefix}_N.pth`` with the largest N that
    loads. Checkpoints that exist but none of which loads are a CheckpointError.
    """
    periodic = sorted(((int(m.group(2)), work_dir / name) for name in existing_checkpoints(work_dir)
                       if (m := _PERIODIC.match(name)) and m.group(1) == prefix), reverse=True)
    latest = work_dir / LATEST
    skipped: list[str] = []
    if latest.is_symlink() and not latest.exists():
        skipped.append(f"{LATEST} skipped: it links to {os.readlink(latest)}, which does not exist")
    elif os.path.lexists(latest):
        try:
            ckpt = _resumable(latest)
        except CheckpointError as exc:
            skipped.append(f"{LATEST} skipped: {_reason(exc)}")
        else:
            done = int(ckpt["meta"]["epoch" if prefix == "epoch" else "iter"])
            newer = [path for n, path in periodic if n > done]
            if not newer:
                return latest, ckpt, []
            skipped.append(f"{LATEST} skipped: it holds {prefix} {done}, older than "
                           f"{newer[0].name}")
    elif periodic:
        skipped.append(f"{LATEST} is missing")
    for _, path in periodic:
        try:
            ckpt = _resumable(path)
        except CheckpointError as exc:
            skipped.append(f"{path.name} skipped: {_reason(exc)}")
            continue
        return path, ckpt, [f"resuming from {path.name}, the newest checkpoint that loads "
                            f"({'; '.join(skipped)})"]
    if skipped or existing_checkpoints(work_dir):
        found = ", ".join(existing_checkpoints(work_dir))
        raise CheckpointError(f"--resume auto: no checkpoint in {work_dir} can be resumed "
                              f"(found {found}): " + "; ".join(skipped or ["none is latest.pth "
                                                                           f"or {prefix}_N.pth"]),
                              hint="pass --resume PATH with a checkpoint that loads, or start a "
                                   "new run with another --work-dir")
    return None


def choose_start(resume: str | None, init_from: str | None, cfg: Any,
                 work_dir: Path) -> StartPlan:
    """How the run starts, from the options, the config and what ``work_dir`` holds."""
    plan = StartPlan()
    if resume is not None and init_from is not None:
        raise ConfigError("--resume and --init-from cannot be combined: resuming restores the "
                          "weights too", hint="use --resume to continue a run, --init-from to "
                          "start a new one from weights")
    resume = resume if resume is not None else cfg.resume_from
    init_from = init_from if init_from is not None else cfg.load_from
    if resume == "auto":
        prefix = "epoch" if cfg.runner.type == "EpochBasedRunner" else "iter"
        found = find_resumable(work_dir, prefix)
        if found is None:
            plan.notes.append(f"nothing to resume in {work_dir} (no checkpoint): starting a "
                              "new run")
            resume = None
        else:
            path, plan.checkpoint, skipped = found
            resume = str(path)
            plan.notes += skipped
    if resume is not None and init_from is not None:
        plan.notes.append(f"load_from = {init_from} is not used: resuming restores the weights")
        init_from = None
    if resume is None:
        _refuse_to_overwrite(work_dir)
    plan.resume, plan.init_from = resume, init_from
    return plan


def _refuse_to_overwrite(work_dir: Path) -> None:
    """A new run would overwrite the checkpoints ``work_dir`` holds: refuse."""
    names = existing_checkpoints(work_dir)
    if names:
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise ConfigError(f"{work_dir} already holds checkpoints ({shown}): a new run there "
                          "would overwrite them",
                          hint="continue that run with --resume auto, or start the new one in "
                               "another directory with --work-dir DIR")


def init_from_weights(ctx: TrainContext, path: str) -> RestoreReport:
    """Load weights only; everything else starts fresh. ``path`` is a checkpoint file, or
    ``torchvision://NAME`` for a torchvision detector's COCO weights (converted, the box
    predictor picked by the training set's class names)."""
    report = RestoreReport("init_from", path)
    if path.startswith(TORCHVISION_PREFIX):
        state, notes = torchvision_detector_state(
            path, unwrap_model(ctx.model).state_dict(), ctx.train_dataset.CLASSES)
        report.notes += notes
    else:
        ckpt = read_checkpoint(path)  # a file or mmdet://NAME
        state = ckpt["state_dict"]
        trained = ckpt["meta"].get("classes")
        classes = list(ctx.train_dataset.CLASSES)
        if trained is not None and list(trained) != classes:
            report.first_notes.append(
                f"the checkpoint was trained on {len(trained)} classes ({_names(trained)}); "
                f"this run has {len(classes)} ({_names(classes)}): tensors whose shape depends "
                "on the classes are skipped and keep their initialisation")
    load = load_state_dict(ctx.model, state, path)
    if load.num_loaded == 0:
        own = unwrap_model(ctx.model).state_dict()
        raise CheckpointError(f"--init-from {path}: none of its {len(state)} tensors fits the "
                              f"model, so nothing would be loaded. Its keys start with "
                              f"{key_prefixes(state)}; the model's with {key_prefixes(own)}",
                              hint="is it a checkpoint of this detector (backbone, neck and head "
                                   "names and sizes)? det reads its own, MMDetection's and bare "
                                   "state dicts")
    report.load = load
    report.restored.append(f"weights only: {load.num_loaded} tensors")
    report.notes.append("optimizer, lr schedule, epoch and random generators start fresh")
    return report


def _names(classes: Sequence[Any], limit: int = 8) -> str:
    """``a, b, c`` or ``a, b, ..., and 72 more``: class names for a one-line note."""
    shown = ", ".join(map(str, list(classes)[:limit]))
    return shown + (f", ... and {len(classes) - limit} more" if len(classes) > limit else "")


def key_prefixes(state: Mapping[str, Any], limit: int = 6) -> str:
    """``backbone (62), neck (8), bbox_head (6)``: first-level key prefixes and their counts."""
    counts = Counter(key.split(".", 1)[0] for key in state)
    shown = ", ".join(f"{name} ({n})" for name, n in counts.most_common(limit))
    more = len(counts) - limit
    return (shown + (f" and {more} more" if more > 0 else "")) if counts else "(no tensors)"


def _load_training_weights(ctx: TrainContext, ckpt: dict[str, Any], path: str) -> int:
    ema = ckpt.get("ema") or {}
    weights = ema.get("train_state_dict") or ckpt["state_dict"]
    load = load_state_dict(ctx.model, weights, path)
    if not load.exact:
        raise CheckpointError(f"{path} does not fit the model, so it cannot be resumed:\n"
                            + "\n".join(load.lines()[1:]),
                            hint=f"resume with the config it was trained with (in its meta), or "
                                 f"start a new run from its weights with --init-from {path}")
    return load.num_loaded


def _restore_optim(ctx: TrainContext, ckpt: dict[str, Any], path: str,
                   report: RestoreReport) -> None:
    try:
        ctx.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: the optimizer state does not fit this config's optimizer "
                            f"({exc})", hint="resume with the config the run was trained with") from None
    groups = ctx.optimizer.param_groups
    plural = "s" if len(groups) != 1 else ""
    report.restored.append(f"optimizer ({type(ctx.optimizer).__name__}, {len(groups)} "
                           f"parameter group{plural} and its state)")
    if "scheduler" in ckpt:
        ctx.scheduler.load_state_dict(ckpt["scheduler"])
        report.restored.append(f"lr schedule ({ctx.cfg.lr_config.policy}, initial lr "
                               f"{groups[0]['initial_lr']:g})")
    if ctx.scaler is not None and "scaler" in ckpt:
        ctx.scaler.load_state_dict(ckpt["scaler"])
        report.restored.append(f"fp16 grad scaler (scale {ctx.scaler.get_scale():g})")
    elif ctx.scaler is not None:
        report.notes.append("the checkpoint has no fp16 grad scaler state: it starts afresh")
    elif "scaler" in ckpt:
        report.notes.append("the checkpoint's fp16 grad scaler state is not used (no --amp fp16)")


def _restore_extras(ctx: TrainContext, ckpt: dict[str, Any], report: RestoreReport) -> None:
    meta = ckpt["meta"]
    has_ema_hook = bool(ctx.hooks.find(EMAHook))
    if ckpt.get("ema") and has_ema_hook:
        ctx.resumed_ema = (ckpt["ema"], ckpt["state_dict"])
        report.restored.append(f"EMA weights ({ckpt['ema'].get('updates', 0)} updates)")
    elif ckpt.get("ema"):
        report.notes.append("the checkpoint's EMA weights are not used (no EMAHook in this config)")
    elif has_ema_hook:
        report.notes.append("the checkpoint has no EMA: the average starts from its weights")
    states = meta.get("hooks") or {}
    for hook in ctx.hooks:
        name = type(hook).__name__
        if name in states and hook.state_dict() is not None:
            hook.load_state_dict(states[name])
            report.restored.append(f"{name} state {states[name]}")
    if meta.get("best"):
        ctx.state.best = meta["best"]
        best = meta["best"]
        report.restored.append(f"best {best['metric']} = {best['value']:.4f} (epoch {best['epoch']})")
    ctx.state.metrics = meta.get("metrics")
    ctx.state.metrics_iter = int(meta.get("metrics_iter", ctx.state.iter
                                              if meta.get("metrics") else -1))
    ctx.eval_pending = bool(meta.get("evaluation_pending")) and ctx.evaluates
    if ctx.eval_pending:
        report.notes.append("the checkpoint was written before its evaluation: evaluating first")
    _restore_rng(ctx, ckpt.get("rng"), report)
    _check_data_position(ctx, meta.get("loader"), report)


def _restore_rng(ctx: TrainContext, saved: Any, report: RestoreReport) -> None:
    """Each rank takes its own generators (``rng`` is one state per rank; older checkpoints
    hold one dict, the state of a single process)."""
    states = saved if isinstance(saved, list) else [saved] if saved else []
    world = ctx.dist.world_size
    if len(states) == world:
        ctx.resumed_rng = states[ctx.dist.rank]
        who = "" if world == 1 else f" of each of the {world} processes"
        report.restored.append("random generators (" + ", ".join(states[0]) + f"){who}")
    elif states:
        report.notes.append(f"random generators not restored: the checkpoint holds those of "
                            f"{len(states)} process(es), this run has {world}; they start from "
                            "this run's seeds")
    else:
        report.notes.append("the checkpoint has no random generator states: they start from "
                            "this run's seeds")


def _check_data_position(ctx: TrainContext, saved: Any, report: RestoreReport) -> None:
    state = ctx.state
    batch = state.iter - state.epoch * state.iters_per_epoch
    if saved and saved.get("batches_per_epoch") not in (None, state.iters_per_epoch):
        report.notes.append(f"the checkpoint's epochs had {saved['batches_per_epoch']} batches, "
                            f"this run's have {state.iters_per_epoch} (other data, batch size "
                            "or number of processes): the data order is not the interrupted "
                            "run's")
    where = "its start" if batch == 0 else f"batch {batch + 1} of {state.iters_per_epoch}"
    report.restored.append(f"data position (epoch {state.epoch + 1} from {where})")


def resume_run(ctx: TrainContext, path: str, ckpt: dict[str, Any] | None = None) -> RestoreReport:
    """Restore everything the checkpoint at ``path`` (``ckpt`` when already read) holds; see
    the module docstring."""
    ckpt = ckpt if ckpt is not None else _resumable(Path(path))
    meta = ckpt["meta"]
    state = ctx.state
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
    num = _load_training_weights(ctx, ckpt, path)
    report.restored.append(f"model weights ({num} tensors)")
    _restore_optim(ctx, ckpt, path, report)
    state.epoch, state.iter = int(meta["epoch"]), int(meta["iter"])
    report.restored.append(f"epoch {state.epoch}, iteration {state.iter}")
    _restore_extras(ctx, ckpt, report)
    return report


def agree_on_start(resume: str | None, init_from: str | None, cfg: Any, work_dir: Path,
                   dist: D.DistInfo) -> StartPlan:
    """:func:`choose_start` on rank 0 (it reads the work dir), its choice (or its error) on
    every rank, so no rank waits for one that stopped. The checkpoint rank 0 read stays there."""
    choice: StartPlan | DetError | None = None
    if dist.is_main:
        try:
            choice = choose_start(resume, init_from, cfg, work_dir)
        except DetError as exc:
            choice = exc
    if dist.enabled:
        shared = D.broadcast_object(choice if not isinstance(choice, StartPlan)
                                    else choice.without_checkpoint())
        choice = choice if dist.is_main else shared
    if isinstance(choice, DetError):
        raise choice
    assert choice is not None
    return choice


def restore(ctx: TrainContext, plan: StartPlan) -> RestoreReport:
    """Start ``ctx`` as ``plan`` says (resume, weights, or nothing), log what came back, and
    keep the report in ``ctx.restored``."""
    if plan.resume is not None:
        report = resume_run(ctx, plan.resume, plan.checkpoint)
    elif plan.init_from is not None:
        report = init_from_weights(ctx, plan.init_from)
    else:
        report = RestoreReport("new")
    report.notes = plan.notes + report.notes
    for line in report.lines():
        log.info("%s", line)
    ctx.restored = report
    return report
