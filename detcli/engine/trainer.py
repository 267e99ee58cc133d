"""The training loop: ``train_detector(loaded, ...) -> TrainResult``.

N images per batch on each of R processes, T loss terms.

A run, in order: join the process group (torchrun; :mod:`.session`), choose how it starts
(:func:`detcli.engine.resume.agree_on_start`, on rank 0, before anything is written: a resume,
weights to load, or a new run — refused in a work directory that holds checkpoints), prepare
the work directory (checkpoint writes a kill interrupted, ``*.pth.tmp``, are removed), seed
every generator with ``seed + rank``, build the :class:`~detcli.engine.context.TrainContext`
(:func:`detcli.engine.build.build_context`: data, model, optimizer, lr schedule, hooks), take
the weights, or the whole run, from a checkpoint (:func:`detcli.engine.resume.restore`), build
the train step (DDP), call ``before_run`` and run :func:`train_loop`.

Epoch- and iteration-based runs are one loop; the state's stop rule
(:class:`~detcli.engine.state.EpochBased` or :class:`~detcli.engine.state.IterBased`) says
when the run is finished and which count the log interval divides. Each iteration (the hot
path; nothing here waits for the device): set the lr, run one
:class:`~detcli.engine.train_step.TrainStep` (forward under autocast, backward, clip, step) and
add the detached losses to the :class:`~detcli.engine.meters.LossMeter`. Every
``log_config.interval`` iterations and at the end of each epoch the meter is read in one
transfer; a NaN or infinite loss found there stops the run with a
:class:`~detcli.errors.TrainingError` naming the term and the first iteration it appeared at,
after saving ``nan_iter_N.pth``.

Epoch e's data order is a function of (seed, e, rank) and each sample's augmentation one of
(seed, e, its index) (:mod:`detcli.data.loader`, ``per_sample_seeds``); a resumed run starts
its epoch at the batch it stopped before, and every rank restores its own random generators,
so it sees the batches and draws an uninterrupted one would, with any number of workers and
processes.
"""

from __future__ import annotations

import logging
import resource
import time
from pathlib import Path
from typing import Iterable

import torch

from detcli.config.loader import LoadedConfig
from detcli.data.loader import set_epoch
from detcli.engine import resume as R
from detcli.engine import session as S
from detcli.engine.build import build_context, build_train_step
from detcli.engine.context import Hook, TrainContext
from detcli.engine.device import resolve_device
from detcli.engine.hooks import CheckpointHook, EvalHook
from detcli.engine.meters import LossMeter
from detcli.engine.seed import epoch_seed, set_random_seed, set_rng_state
from detcli.engine.state import TrainResult
from detcli.engine.train_step import TrainStep, check_amp
from detcli.engine.work_dir import default_work_dir
from detcli.errors import TrainingError

log = logging.getLogger(__name__)


def train_detector(loaded: LoadedConfig, *, work_dir: str | Path | None = None,
                   resume: str | None = None, init_from: str | None = None,
                   device: str | None = None, amp: str | None = None,
                   callbacks: Iterable[Hook] = ()) -> TrainResult:
    """Train the detector ``loaded`` describes (module docstring).

    ``resume``: None, "auto" or a checkpoint path; ``init_from``: a checkpoint whose weights
    start the run; ``device``: "cpu", "cuda" (default: CUDA when available); ``amp``: None,
    "bf16" or "fp16" (CUDA only); ``callbacks``: extra hooks (a progress display).
    """
    cfg = loaded.cfg
    work_dir = Path(work_dir) if work_dir is not None else default_work_dir(loaded.source)
    dev = resolve_device(device)
    amp = check_amp(amp, dev)
    with S.training_process(cfg, dev) as (dist, dev):
        plan = R.agree_on_start(resume, init_from, cfg, work_dir, dist)
        with S.work_dir_logging(loaded, work_dir, dist):
            set_random_seed(cfg.seed + dist.rank, cfg.deterministic)
            S.limit_threads(cfg)
            ctx = build_context(loaded, work_dir, dev, dist, amp=amp, callbacks=callbacks)
            restored = R.restore(ctx, plan)
            if restored.already_finished and not ctx.eval_pending:
                return result(ctx, "already finished")
            step = build_train_step(ctx, amp)
            ctx.hooks.call("before_run", ctx)
            if ctx.resumed_rng is not None:
                set_rng_state(ctx.resumed_rng)
            if ctx.eval_pending:
                evaluate_pending(ctx)
            if restored.already_finished:  # only its last evaluation was missing
                ctx.hooks.call("after_run", ctx)
                return result(ctx, "already finished")
            reason = train_loop(ctx, step)
            ctx.hooks.call("after_run", ctx)
            return result(ctx, reason)


def train_loop(ctx: TrainContext, step: TrainStep) -> str:
    """Train until the stop rule says the run is finished or a hook sets ``stop_reason``;
    returns why it ended. Epoch e runs from its next batch (all of them unless resumed in it)."""
    state, hooks, loader = ctx.state, ctx.hooks, ctx.loader
    log.info("training on %s: %d images, %d iterations per epoch, %d %ss", ctx.device,
             len(ctx.train_dataset), state.iters_per_epoch, state.rule.limit, state.rule.unit)
    every = ctx.cfg.log_config.interval
    train_log = TrainLog(ctx)
    while not state.finished and not state.stop_reason:
        # this epoch's order from (seed, epoch, rank); resumed inside it, from its next batch
        state.inner_iter = state.iter - state.epoch * state.iters_per_epoch
        set_epoch(loader, state.epoch, first_batch=state.inner_iter)
        if loader.generator is not None:  # the workers' base seed
            loader.generator.manual_seed(epoch_seed(ctx.cfg.seed, state.epoch, ctx.dist.rank))
        hooks.call("before_epoch", ctx)
        train_log.start_interval()
        tick = time.perf_counter()
        for images, targets in loader:
            train_log.data_time += time.perf_counter() - tick
            hooks.call("before_iter", ctx)
            ctx.scheduler.step(state.iter, state.epoch)
            losses = step(images, targets)
            state.iter += 1
            state.inner_iter += 1
            train_log.add(losses, len(images))
            if state.log_count % every == 0:
                train_log.flush()
            hooks.call("after_iter", ctx)
            if state.stop_reason or state.finished:  # an epoch ends only between batches
                break
            tick = time.perf_counter()
        if train_log.pending:
            train_log.flush()
        if state.inner_iter >= state.iters_per_epoch:
            state.epoch += 1
            hooks.call("after_epoch", ctx)
    return state.stop_reason or "finished"


class TrainLog:
    """The losses of the iterations since the last record, and the time they took; each
    :meth:`flush` reads them (one device sync) and emits a ``"train"`` record."""

    def __init__(self, ctx: TrainContext) -> None:
        self.ctx = ctx
        self.meter = LossMeter()
        self.run_start, self.run_start_iter = time.perf_counter(), ctx.state.iter
        self.start_interval()

    def start_interval(self) -> None:
        self.interval_start = time.perf_counter()
        self.data_time = 0.0
        self.images = 0

    @property
    def pending(self) -> bool:
        return len(self.meter) > 0

    def add(self, losses: dict[str, torch.Tensor], num_images: int) -> None:
        self.images += num_images
        self.meter.add(losses, self.ctx.state.iter)

    def flush(self) -> None:
        """Read the meter, stop on a non-finite loss, emit a train record."""
        ctx, state = self.ctx, self.ctx.state
        flushed = self.meter.flush()
        if flushed.bad_term is not None:
            self._stop_on_nonfinite(flushed.bad_term, flushed.bad_iter)
        elapsed = max(time.perf_counter() - self.interval_start, 1e-9)
        count = max(flushed.count, 1)
        per_iter = (time.perf_counter() - self.run_start) / max(state.iter - self.run_start_iter, 1)
        ctx.emit_log({"mode": "train", "epoch": state.epoch + 1, "iter": state.iter,
                      "inner_iter": state.inner_iter, "iters_per_epoch": state.iters_per_epoch,
                      "max_iters": state.max_iters, "lr": ctx.scheduler.current_lr(),
                      **flushed.means, "time": elapsed / count,
                      "data_time": self.data_time / count,
                      "img_per_s": self.images * ctx.dist.world_size / elapsed,
                      "memory": memory_mb(ctx.device),
                      "eta_s": per_iter * (state.max_iters - state.iter)})
        self.start_interval()

    def _stop_on_nonfinite(self, term: str, bad_iter: int | None) -> None:
        path = self.ctx.work_dir / f"nan_iter_{bad_iter}.pth"
        self.ctx.save_checkpoint(path)  # every rank found it (the meter's all-reduce)
        epoch = ((bad_iter or 1) - 1) // self.ctx.state.iters_per_epoch + 1
        raise TrainingError(
            f"{term} became NaN or infinite at iteration {bad_iter} (epoch {epoch}); training "
            f"stopped. The weights at iteration {self.ctx.state.iter} are in {path}",
            hint="lower optimizer.lr or lengthen the warmup, set optimizer_config.grad_clip, or "
                 "check the data with `det data check`")


def memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA), else the process's peak resident memory, in MB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB


def evaluate_pending(ctx: TrainContext) -> None:
    """The resumed checkpoint was written before its evaluation: do that evaluation now
    (it leaves the random generators as they are), so best and early stopping see it."""
    state = ctx.state
    log.info("evaluating %s %d first: its checkpoint was written before its evaluation",
             state.rule.unit, state.rule.done(state))
    for hook in ctx.hooks.find(EvalHook):
        hook.evaluate(ctx)


def result(ctx: TrainContext, reason: str) -> TrainResult:
    """What the run did, for the CLI."""
    saved = [h.saved for h in ctx.hooks.find(CheckpointHook)]
    val = ctx.val_dataset
    counts = val.num_gts_per_class().tolist() if hasattr(val, "num_gts_per_class") else []
    state = ctx.state
    return TrainResult(work_dir=ctx.work_dir, epoch=state.epoch, iter=state.iter,
                       stop_reason=reason, restored=ctx.restored, metrics=state.metrics,
                       best=state.best, checkpoints=saved[0] if saved else [],
                       history=ctx.history, val_gt_per_class=counts)
