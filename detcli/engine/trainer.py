"""The training loop: ``train_detector(loaded, ...) -> TrainResult``.

N images per batch on each of R processes, T loss terms.

A run, in order: join the process group (torchrun), prepare the work directory, seed every
generator with ``seed + rank``, build the training set and loader, the model (its
``init_weights`` loads pretrained backbones), the optimizer (:mod:`.optim`), the lr schedule
(:mod:`.lr_schedule`) and the hooks (:mod:`.hooks`); then take the weights, or the whole run,
from a checkpoint (:mod:`.resume`), wrap the model in DDP, call ``before_run`` and loop.

Each iteration (the hot path; nothing here waits for the device): set the lr, run one
:class:`~detcli.engine.train_step.TrainStep` (forward under autocast, backward, clip, step),
and add the detached losses to the :class:`~detcli.engine.meters.LossMeter`. Every ``log_config.interval``
iterations of an epoch (of the run, for IterBasedRunner) and at the end of each epoch the
meter is read in one transfer; a NaN or
infinite loss found there stops the run with a :class:`~detcli.errors.TrainingError` naming
the term and the first iteration it appeared at, after saving ``nan_iter_N.pth``.

Epoch e's data order is a function of (seed, e, rank) and each sample's augmentation one of
(seed, e, its index) (:mod:`detcli.data.loader`, ``per_sample_seeds``); a resumed run starts
its epoch at the batch it stopped before, and every rank restores its own random generators,
so it sees the batches and draws an uninterrupted one would, with any number of workers and
processes.

Before anything is written, the start is chosen (:func:`detcli.engine.resume.choose_start`, on
rank 0, and broadcast): a resume, weights to load, or a new run — refused in a work directory
that holds checkpoints. Checkpoint writes a kill interrupted (``*.pth.tmp``) are removed.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch.utils.data import DataLoader

from detcli.config.loader import LoadedConfig
from detcli.data.build import build_dataset, build_eval_dataset
from detcli.data.check import check_before_training
from detcli.data.loader import SkipBadImages, build_dataloader, set_epoch
from detcli.engine import distributed as D
from detcli.engine import resume as R
from detcli.engine.checkpoint import save_checkpoint
from detcli.engine.hooks import CheckpointHook, EMAHook, EvalHook, Hook, HookList, LoggerHook
from detcli.engine.hooks.checkpoint_hook import remove_partial_saves
from detcli.engine.lr_schedule import LrScheduler
from detcli.engine.meters import LossMeter
from detcli.engine.optim import auto_scale_factor, build_optimizer
from detcli.engine.runtime import memory_format, prepare_network
from detcli.engine.seed import epoch_seed, rng_state, set_random_seed, set_rng_state
from detcli.engine.state import TrainResult, TrainState
from detcli.engine.train_step import LossForward, TrainStep, check_amp
from detcli.engine.work_dir import (attach_log_file, default_work_dir, detach_log_file,
                                    make_work_dir, resolved_config_text, write_config)
from detcli.errors import ConfigError, DataError, DetError, TrainingError
from detcli.registry import HOOKS

log = logging.getLogger(__name__)


class Trainer:
    """One training run of a loaded config; :meth:`run` does it (module docstring)."""

    def __init__(self, loaded: LoadedConfig, *, work_dir: str | Path | None = None,
                 resume: str | None = None, init_from: str | None = None,
                 device: str | None = None, amp: str | None = None,
                 callbacks: Iterable[Hook] = ()) -> None:
        from detcli.engine.tester import resolve_device

        self.loaded, self.cfg = loaded, loaded.cfg
        self.work_dir = Path(work_dir) if work_dir is not None else default_work_dir(loaded.source)
        self.device = resolve_device(device)
        self.amp = check_amp(amp, self.device)
        self._resume, self._init_from = resume, init_from
        self.callbacks = list(callbacks)
        self.dist = D.DistInfo()
        self.ema: Any = None  # set by an EMAHook
        self.resumed_ema: tuple[dict, dict] | None = None
        self.resumed_rng: dict[str, Any] | None = None  # this rank's, from --resume
        self.eval_pending = False  # the resumed checkpoint was saved before its evaluation
        self.history: list[dict[str, Any]] = []
        self.meter = LossMeter()
        self._val_dataset: Any = None
        self._log_handler: logging.Handler | None = None
        self._leave_group = False
        self._threads_before = torch.get_num_threads()
        self._quiet_level: int | None = None

    # -- what hooks read ----------------------------------------------------------------------

    @property
    def evaluates(self) -> bool:
        return self.cfg.data.val is not None

    @property
    def val_dataset(self) -> Any:
        if self._val_dataset is None and self.evaluates:
            self._val_dataset = build_eval_dataset(self.cfg.data.val,
                                                   on_bad=self.cfg.data.on_bad_image)
        return self._val_dataset

    @property
    def has_ema_hook(self) -> bool:
        return bool(self.hooks.find(EMAHook))

    # -- setup --------------------------------------------------------------------------------

    def _setup(self) -> None:
        cfg = self.cfg
        joined_before = D.is_distributed()
        self.dist = D.init_distributed(cfg.dist_params.backend, self.device.type,
                                       cfg.dist_params.timeout)
        self._leave_group = self.dist.enabled and not joined_before
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.config_text = resolved_config_text(self.loaded)
        self.start = self._choose_start()  # before anything is written to the work dir
        if self.dist.is_main:
            make_work_dir(self.work_dir)
            remove_partial_saves(self.work_dir)
            write_config(self.work_dir, self.loaded)
            self._log_handler = attach_log_file(self.work_dir, cfg.log_level)
        else:  # rank 0 speaks for the run; the others only warn
            self._quiet_level = logging.getLogger("detcli").level
            logging.getLogger("detcli").setLevel(logging.WARNING)
        set_random_seed(cfg.seed + self.dist.rank, cfg.deterministic)
        self._limit_threads()
        self._build_data()
        self._build_model()
        self._build_hooks()

    def _limit_threads(self) -> None:
        """MMDetection's ``setup_multi_processes``: with loader workers and no
        ``OMP_NUM_THREADS``, one intra-op thread per process (workers and torch's threads would
        otherwise fight over the cores). Restored when the run ends."""
        if "OMP_NUM_THREADS" not in os.environ and self.cfg.data.workers_per_gpu > 1:
            torch.set_num_threads(1)
            log.info("OMP_NUM_THREADS is not set and workers_per_gpu > 1: torch uses one thread "
                     "in the training process (set OMP_NUM_THREADS to choose)")

    def _build_data(self) -> None:
        data = self.cfg.data
        if data.train is None:
            raise ConfigError("data.train is not set: there is nothing to train on")
        dataset = build_dataset(data.train, on_bad=data.on_bad_image)
        self._check_train_data(dataset)
        if data.on_bad_image == "skip":
            dataset = SkipBadImages(dataset, record_file=self.work_dir / "skipped_images.jsonl")
        self.train_dataset = dataset
        self.loader: DataLoader = build_dataloader(
            dataset, data.samples_per_gpu, data.workers_per_gpu, shuffle=True, seed=self.cfg.seed,
            distributed=self.dist.enabled, group_by_aspect_ratio=data.group_by_aspect_ratio,
            persistent_workers=data.persistent_workers, per_sample_seeds=True,
            pin_memory=self.device.type == "cuda")
        if len(self.loader) == 0:
            raise DataError(f"the training set {getattr(dataset, 'source', '')} gives no batch "
                            f"({len(dataset)} images, samples_per_gpu {data.samples_per_gpu})")
        runner = self.cfg.runner
        by_epoch = runner.type == "EpochBasedRunner"
        ipe = len(self.loader)
        self.state = TrainState(by_epoch=by_epoch, iters_per_epoch=ipe,
                                max_epochs=runner.max_epochs if by_epoch else None,
                                max_iters=runner.max_epochs * ipe if by_epoch else runner.max_iters)

    def _check_train_data(self, dataset: Any) -> None:
        """The cheap part of ``det data check`` on the training and validation sets before
        training (:func:`~detcli.data.check.check_before_training`): annotation problems found
        while loading, image files that are missing or not images, a training set without
        boxes. With ``on_bad_image = "stop"`` an error stops here; with ``"skip"`` the problems
        are listed in ``dataset_problems.txt``."""
        datasets = {"train": dataset, **({"val": self.val_dataset} if self.evaluates else {})}
        problem_file = self.work_dir / "dataset_problems.txt" if self.dist.is_main else None
        check_before_training(datasets, on_bad=self.cfg.data.on_bad_image, problem_file=problem_file)

    def _build_model(self) -> None:
        from detcli.models.build import build_detector

        cfg = self.cfg
        model = build_detector(cfg.model)
        model.init_weights()
        if cfg.sync_bn:
            model = D.convert_sync_bn(model, self.device)
        self.model = prepare_network(model.to(self.device).train(), cfg.runtime, self.device)
        scale = auto_scale_factor(cfg.auto_scale_lr.enable, cfg.auto_scale_lr.base_batch_size,
                                  cfg.data.samples_per_gpu, self.dist.world_size)
        self.optimizer = build_optimizer(self.model, cfg.optimizer, lr_scale=scale)
        self.scheduler = LrScheduler(self.optimizer, cfg.lr_config, max_iters=self.state.max_iters,
                                     iters_per_epoch=self.state.iters_per_epoch,
                                     by_epoch=self.state.by_epoch)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        clip = cfg.optimizer_config.grad_clip
        self.grad_clip = (clip.max_norm, clip.norm_type) if clip is not None else None

    def _build_hooks(self) -> None:
        cfg = self.cfg
        hooks = HookList([LoggerHook(self.work_dir / "metrics.jsonl"),
                          CheckpointHook.from_config(cfg.checkpoint_config)])
        if self.evaluates:
            hooks.add(EvalHook.from_config(cfg.evaluation))
        for hook_cfg in [*cfg.log_config.hooks, *cfg.custom_hooks]:
            hooks.add(HOOKS.build(hook_cfg))
        for callback in self.callbacks:
            hooks.add(callback)
        self.hooks = hooks

    def _choose_start(self) -> R.StartPlan:
        """Rank 0 chooses how the run starts (it reads the work dir); every rank gets its
        choice, or raises its error, so no rank waits for one that stopped."""
        choice: R.StartPlan | DetError | None = None
        if self.dist.is_main:
            try:
                choice = R.choose_start(self._resume, self._init_from, self.cfg, self.work_dir)
            except DetError as exc:
                choice = exc
        if self.dist.enabled:  # the checkpoint rank 0 read stays on rank 0
            shared = D.broadcast_object(choice if not isinstance(choice, R.StartPlan)
                                        else choice.without_checkpoint())
            choice = choice if self.dist.is_main else shared
        if isinstance(choice, DetError):
            raise choice
        assert choice is not None
        return choice

    def _restore(self) -> R.RestoreReport:
        plan = self.start
        if plan.resume is not None:
            report = R.resume_run(self, plan.resume, plan.checkpoint)
        elif plan.init_from is not None:
            report = R.init_from_weights(self, plan.init_from)
        else:
            report = R.RestoreReport("new")
        report.notes = plan.notes + report.notes
        for line in report.lines():
            log.info("%s", line)
        return report

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        try:
            self._setup()
            self.restored = self._restore()
            if self.restored.already_finished and not self.eval_pending:
                return self._result("already finished")
            self.step = TrainStep(D.wrap_ddp(LossForward(self.model), self.device),
                                  self.optimizer, device=self.device, amp=self.amp,
                                  scaler=self.scaler, grad_clip=self.grad_clip,
                                  memory_format=memory_format(self.cfg.runtime, self.device))
            self.hooks.call("before_run", self)
            if self.resumed_rng is not None:
                set_rng_state(self.resumed_rng)
            if self.eval_pending:
                self._evaluate_pending()
            if self.restored.already_finished:  # only its last evaluation was missing
                self.hooks.call("after_run", self)
                return self._result("already finished")
            log.info("training on %s: %d images, %d iterations per epoch, %s", self.device,
                     len(self.train_dataset), self.state.iters_per_epoch,
                     f"{self.state.max_epochs} epochs" if self.state.by_epoch
                     else f"{self.state.max_iters} iterations")
            self._start_time, self._start_iter = time.perf_counter(), self.state.iter
            while not self.state.finished and not self.state.stop_reason:
                self._run_epoch()
            self.hooks.call("after_run", self)
            return self._result(self.state.stop_reason or "finished")
        finally:
            if self._log_handler is not None:
                detach_log_file(self._log_handler)
            if self._quiet_level is not None:
                logging.getLogger("detcli").setLevel(self._quiet_level)
            if self._leave_group:
                D.cleanup()
            torch.set_num_threads(self._threads_before)

    def _result(self, reason: str) -> TrainResult:
        saved = [h.saved for h in self.hooks.find(CheckpointHook)]
        val = self.val_dataset
        counts = val.num_gts_per_class().tolist() if hasattr(val, "num_gts_per_class") else []
        return TrainResult(work_dir=self.work_dir, epoch=self.state.epoch, iter=self.state.iter,
                           stop_reason=reason, restored=self.restored, metrics=self.state.metrics,
                           best=self.state.best, checkpoints=saved[0] if saved else [],
                           history=self.history, val_gt_per_class=counts)

    def _evaluate_pending(self) -> None:
        """The resumed checkpoint was written before its evaluation: do that evaluation now
        (it leaves the random generators as they are), so best and early stopping see it."""
        log.info("evaluating %s %d first: its checkpoint was written before its evaluation",
                 "epoch" if self.state.by_epoch else "iteration",
                 self.state.epoch if self.state.by_epoch else self.state.iter)
        for hook in self.hooks.find(EvalHook):
            hook.evaluate(self)

    def _run_epoch(self) -> None:
        state = self.state
        # this epoch's order from (seed, epoch, rank); resumed inside it, from its next batch
        state.inner_iter = state.iter - state.epoch * state.iters_per_epoch
        set_epoch(self.loader, state.epoch, first_batch=state.inner_iter)
        if self.loader.generator is not None:  # the workers' base seed
            self.loader.generator.manual_seed(epoch_seed(self.cfg.seed, state.epoch, self.dist.rank))
        loader = self.loader
        self.hooks.call("before_epoch", self)
        self._reset_interval()
        interval = self.cfg.log_config.interval
        tick = time.perf_counter()
        for images, targets in loader:
            self._data_time += time.perf_counter() - tick
            self.hooks.call("before_iter", self)
            self.scheduler.step(state.iter, state.epoch)
            losses = self.step(images, targets)
            state.iter += 1
            state.inner_iter += 1
            self._images += len(images)
            self.meter.add(losses, state.iter)
            if (state.inner_iter if state.by_epoch else state.iter) % interval == 0:
                self._flush()
            self.hooks.call("after_iter", self)
            if state.stop_reason or (not state.by_epoch and state.finished):
                break
            tick = time.perf_counter()
        if len(self.meter):
            self._flush()
        if state.inner_iter >= state.iters_per_epoch:
            state.epoch += 1
            self.hooks.call("after_epoch", self)

    # -- logging and saving -------------------------------------------------------------------

    def _reset_interval(self) -> None:
        self._interval_start = time.perf_counter()
        self._data_time = 0.0
        self._images = 0

    def _flush(self) -> None:
        """Read the meter (one device sync), stop on a non-finite loss, emit a train record."""
        flushed = self.meter.flush()
        state = self.state
        if flushed.bad_term is not None:
            self._stop_on_nonfinite(flushed.bad_term, flushed.bad_iter)
        elapsed = max(time.perf_counter() - self._interval_start, 1e-9)
        count = max(flushed.count, 1)
        run_iters = max(state.iter - self._start_iter, 1)
        per_iter = (time.perf_counter() - self._start_time) / run_iters
        record = {"mode": "train", "epoch": state.epoch + 1, "iter": state.iter,
                  "inner_iter": state.inner_iter, "iters_per_epoch": state.iters_per_epoch,
                  "max_iters": state.max_iters, "lr": self.scheduler.current_lr(),
                  **flushed.means, "time": elapsed / count, "data_time": self._data_time / count,
                  "img_per_s": self._images * self.dist.world_size / elapsed,
                  "memory": self._memory_mb(), "eta_s": per_iter * (state.max_iters - state.iter)}
        self.emit_log(record)
        self._reset_interval()

    def _memory_mb(self) -> float:
        """Peak GPU memory allocated (CUDA), else the process's peak resident memory, in MB."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KB

    def _stop_on_nonfinite(self, term: str, bad_iter: int | None) -> None:
        path = self.work_dir / f"nan_iter_{bad_iter}.pth"
        self.save_checkpoint(path)  # every rank found it (the meter's all-reduce)
        epoch = ((bad_iter or 1) - 1) // self.state.iters_per_epoch + 1
        raise TrainingError(
            f"{term} became NaN or infinite at iteration {bad_iter} (epoch {epoch}); training "
            f"stopped. The weights at iteration {self.state.iter} are in {path}",
            hint="lower optimizer.lr or lengthen the warmup, set optimizer_config.grad_clip, or "
                 "check the data with `det data check`")

    def emit_log(self, record: dict[str, Any]) -> None:
        """Keep ``record`` in the history and hand it to every hook's ``on_log``."""
        self.history.append(record)
        self.hooks.call("on_log", self, record)

    def save_checkpoint(self, path: Path) -> Path:
        """Everything a resume needs, at ``path`` (atomic, written by rank 0). Every rank
        calls it: the random generators of all ranks are gathered into the checkpoint."""
        rng = D.all_gather_object(rng_state())  # (R,) one state per rank
        if not self.dist.is_main:
            return path
        state = self.state
        hook_states = {type(h).__name__: h.state_dict() for h in self.hooks
                       if hasattr(h, "state_dict")}
        pending = state.metrics_iter != state.iter and any(
            h.due(state) for h in self.hooks.find(EvalHook))
        meta = {"epoch": state.epoch, "iter": state.iter, "max_epochs": state.max_epochs,
                "max_iters": state.max_iters, "config": self.config_text,
                "classes": list(self.train_dataset.CLASSES), "seed": self.cfg.seed,
                "world_size": self.dist.world_size, "best": state.best,
                "metrics": state.metrics, "metrics_iter": state.metrics_iter,
                "evaluation_pending": pending, "hooks": hook_states,
                "loader": {"epoch": state.epoch, "batch": state.iter - state.epoch
                           * state.iters_per_epoch, "batches_per_epoch": state.iters_per_epoch}}
        return save_checkpoint(path, self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                               scaler=self.scaler, ema=self.ema, meta=meta, rng=rng)


def train_detector(loaded: LoadedConfig, *, work_dir: str | Path | None = None,
                   resume: str | None = None, init_from: str | None = None,
                   device: str | None = None, amp: str | None = None,
                   callbacks: Iterable[Hook] = ()) -> TrainResult:
    """Train the detector ``loaded`` describes; see :class:`Trainer` and the module docstring.

    ``resume``: None, "auto" or a checkpoint path; ``init_from``: a checkpoint whose weights
    start the run; ``device``: "cpu", "cuda" (default: CUDA when available); ``amp``: None,
    "bf16" or "fp16" (CUDA only); ``callbacks``: extra hooks (a progress display).
    """
    trainer = Trainer(loaded, work_dir=work_dir, resume=resume, init_from=init_from,
                      device=device, amp=amp, callbacks=callbacks)
    return trainer.run()
