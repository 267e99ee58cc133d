"""What a training run is made of, built from its config: :func:`build_context`.

N images per batch on each of R processes.

In order (the order decides which random numbers each part draws, so it is fixed): the
training set, checked with the validation set (:func:`~detcli.data.check.check_before_training`)
and its loader; the model (its ``init_weights`` loads pretrained backbones), the optimizer
(:mod:`.optim`), the lr schedule (:mod:`.lr_schedule`) and the fp16 grad scaler; the hooks
(:mod:`.hooks`). The train step (:func:`build_train_step`) is built after a resume has loaded
the weights: wrapping the model in DDP copies rank 0's weights to every rank.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from detcli.config.loader import LoadedConfig
from detcli.data.build import build_dataset, build_eval_dataset
from detcli.data.check import check_before_training
from detcli.data.loader import SkipBadImages, build_dataloader
from detcli.engine import distributed as D
from detcli.engine.context import Hook, HookList, TrainContext
from detcli.engine.hooks import CheckpointHook, CurvesHook, EvalHook, LoggerHook
from detcli.engine.lr_schedule import LrScheduler
from detcli.engine.optim import auto_scale_factor, build_optimizer
from detcli.engine.runtime import memory_format, prepare_network
from detcli.engine.state import EpochBased, IterBased, StopRule, TrainState
from detcli.engine.train_step import LossForward, TrainStep
from detcli.engine.work_dir import resolved_config_text
from detcli.errors import ConfigError, DataError
from detcli.models.build import build_detector
from detcli.registry import HOOKS, fields_of

log = logging.getLogger(__name__)


def build_context(loaded: LoadedConfig, work_dir: Path, device: torch.device,
                  dist: D.DistInfo, *, amp: str | None,
                  callbacks: Iterable[Hook] = ()) -> TrainContext:
    """Everything the run of ``loaded`` needs before its first hook (module docstring)."""
    cfg = loaded.cfg
    train_dataset, val_dataset = build_train_datasets(cfg, work_dir, dist)
    loader = build_train_loader(cfg, train_dataset, dist, device)
    state = TrainState(rule=stop_rule(cfg.runner), iters_per_epoch=len(loader))
    model = build_train_model(cfg, device)
    scale = auto_scale_factor(cfg.auto_scale_lr.enable, cfg.auto_scale_lr.base_batch_size,
                              cfg.data.samples_per_gpu, dist.world_size)
    optimizer = build_optimizer(model, cfg.optimizer, lr_scale=scale)
    scheduler = LrScheduler(optimizer, cfg.lr_config, max_iters=state.max_iters,
                            iters_per_epoch=state.iters_per_epoch, by_epoch=state.by_epoch)
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    hooks = build_hooks(cfg, work_dir, evaluates=val_dataset is not None, callbacks=callbacks)
    return TrainContext(cfg=cfg, config_text=resolved_config_text(loaded), work_dir=work_dir,
                        device=device, dist=dist, state=state, train_dataset=train_dataset,
                        val_dataset=val_dataset, loader=loader, model=model,
                        optimizer=optimizer, scheduler=scheduler, scaler=scaler, hooks=hooks)


def build_train_datasets(cfg: Any, work_dir: Path, dist: D.DistInfo
                         ) -> tuple[Dataset, Dataset | None]:
    """(training set, validation set or None), after the cheap part of ``det data check``
    (:func:`~detcli.data.check.check_before_training`): annotation problems found while
    loading, image files that are missing or not images, a training set without boxes. With
    ``on_bad_image = "stop"`` an error stops here; with ``"skip"`` the problems are listed in
    ``dataset_problems.txt`` and bad training images are skipped (``skipped_images.jsonl``)."""
    data = cfg.data
    if data.train is None:
        raise ConfigError("data.train is not set: there is nothing to train on")
    dataset = build_dataset(data.train, on_bad=data.on_bad_image)
    val = build_eval_dataset(data.val, on_bad=data.on_bad_image) if data.val is not None else None
    problem_file = work_dir / "dataset_problems.txt" if dist.is_main else None
    check_before_training({"train": dataset, **({"val": val} if val is not None else {})},
                          on_bad=data.on_bad_image, problem_file=problem_file)
    if data.on_bad_image == "skip":
        dataset = SkipBadImages(dataset, record_file=work_dir / "skipped_images.jsonl")
    return dataset, val


def build_train_loader(cfg: Any, dataset: Dataset, dist: D.DistInfo,
                       device: torch.device) -> DataLoader:
    """Shuffled batches whose order is a function of (seed, epoch, rank) and whose
    augmentations one of (seed, epoch, sample index) (:mod:`detcli.data.loader`); each sample
    goes through the dataset's pipeline of its epoch (``set_epoch``: PipelineSwitchHook)."""
    data = cfg.data
    loader = build_dataloader(
        dataset, data.samples_per_gpu, data.workers_per_gpu, shuffle=True, seed=cfg.seed,
        distributed=dist.enabled, group_by_aspect_ratio=data.group_by_aspect_ratio,
        persistent_workers=data.persistent_workers, per_sample_seeds=True,
        pin_memory=device.type == "cuda", on_epoch=dataset.set_epoch)
    if len(loader) == 0:
        raise DataError(f"the training set {getattr(dataset, 'source', '')} gives no batch "
                        f"({len(dataset)} images, samples_per_gpu {data.samples_per_gpu})")
    return loader


def stop_rule(runner: Any) -> StopRule:
    """``runner.max_epochs`` epochs (EpochBasedRunner) or ``runner.max_iters`` iterations."""
    if runner.type == "EpochBasedRunner":
        return EpochBased(runner.max_epochs)
    return IterBased(runner.max_iters)


def build_train_model(cfg: Any, device: torch.device) -> nn.Module:
    """The detector with its initial weights, on ``device``, in train mode (SyncBN and the
    runtime's memory format / compile as the config asks)."""
    model = build_detector(cfg.model)
    model.init_weights()
    if cfg.sync_bn:
        model = D.convert_sync_bn(model, device)
    return prepare_network(model.to(device).train(), cfg.runtime, device)


def build_hooks(cfg: Any, work_dir: Path, *, evaluates: bool,
                callbacks: Iterable[Hook] = ()) -> HookList:
    """The engine's hooks (metrics.jsonl, checkpoints, evaluation when there is a val set,
    curves.png unless ``log_config.curves = false``), the config's (``log_config.hooks``,
    ``custom_hooks``), then ``callbacks``."""
    hooks = HookList([LoggerHook(work_dir / "metrics.jsonl"),
                      CheckpointHook(**fields_of(cfg.checkpoint_config))])
    evaluator = EvalHook.from_config(cfg.evaluation) if evaluates else None
    if evaluator is not None:
        hooks.add(evaluator)
    if cfg.log_config.curves:  # the legend names the best value of the metric save_best picks
        hooks.add(CurvesHook(work_dir / "metrics.jsonl", work_dir / "curves.png",
                             metric=(evaluator.save_best or evaluator.scoring.primary_key)
                             if evaluator else None,
                             greater=evaluator.greater if evaluator else True))
    for hook_cfg in [*cfg.log_config.hooks, *cfg.custom_hooks]:
        hooks.add(HOOKS.build(hook_cfg))
    for callback in callbacks:
        hooks.add(callback)
    return hooks


def build_train_step(ctx: TrainContext, amp: str | None) -> TrainStep:
    """One optimisation step of ``ctx.model`` (through DDP in a distributed run)."""
    clip = ctx.cfg.optimizer_config.grad_clip
    return TrainStep(D.wrap_ddp(LossForward(ctx.model), ctx.device), ctx.optimizer,
                     device=ctx.device, amp=amp, scaler=ctx.scaler,
                     grad_clip=(clip.max_norm, clip.norm_type) if clip is not None else None,
                     memory_format=memory_format(ctx.cfg.runtime, ctx.device))
