"""The optimizer: SGD or AdamW over parameter groups from ``paramwise_cfg`` (MMCV's rules).

P trainable parameters. Every trainable parameter gets an lr multiplier and a weight-decay
multiplier, decided in this order (MMCV's ``DefaultOptimizerConstructor``):

1. ``custom_keys``: the longest key (ties: alphabetical) that is a substring of the
   parameter's full name (``backbone.layer1.0.conv1.weight``) sets both multipliers;
2. otherwise the lr: a ``bias`` outside norm layers gets ``bias_lr_mult``;
3. and the decay: a parameter of a norm layer (BN, SyncBN, GN, LN) gets ``norm_decay_mult``,
   and any other ``bias`` gets ``bias_decay_mult`` (so a norm layer's bias never does).

Unset multipliers are 1. Frozen parameters (``requires_grad = False``) are left out.
Parameters with the same multipliers share one group, in order of first appearance; each
group records ``initial_lr``, the lr the schedule scales (:mod:`detcli.engine.lr_schedule`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from detcli.engine.config import AdamWConfig, ParamwiseConfig, SGDConfig
from detcli.errors import ConfigError

log = logging.getLogger(__name__)

NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


@dataclass(frozen=True)
class ParamRule:
    """Why a parameter has its multipliers (``custom_keys['backbone']``, ``norm``, ``bias``)."""

    lr_mult: float = 1.0
    decay_mult: float = 1.0
    reason: str = "default"


def _named_params(model: nn.Module) -> Iterator[tuple[str, nn.Parameter, nn.Module]]:
    """(full name, parameter, owning module) of every parameter, each once."""
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            yield (f"{prefix}.{name}" if prefix else name), param, module


def param_rule(full_name: str, module: nn.Module, paramwise: ParamwiseConfig | None) -> ParamRule:
    """The multipliers of one parameter (module docstring)."""
    if paramwise is None:
        return ParamRule()
    keys = sorted(sorted(paramwise.custom_keys), key=len, reverse=True)
    for key in keys:
        if key in full_name:
            custom = paramwise.custom_keys[key]
            return ParamRule(custom.lr_mult, custom.decay_mult, f"custom_keys[{key!r}]")
    is_norm = isinstance(module, NORM_TYPES)
    is_bias = full_name.rsplit(".", 1)[-1] == "bias"
    lr_mult, decay_mult, reasons = 1.0, 1.0, []
    if is_bias and not is_norm and paramwise.bias_lr_mult is not None:
        lr_mult = paramwise.bias_lr_mult
        reasons.append("bias_lr_mult")
    if is_norm:
        if paramwise.norm_decay_mult is not None:
            decay_mult = paramwise.norm_decay_mult
            reasons.append("norm_decay_mult")
    elif is_bias and paramwise.bias_decay_mult is not None:
        decay_mult = paramwise.bias_decay_mult
        reasons.append("bias_decay_mult")
    return ParamRule(lr_mult, decay_mult, ", ".join(reasons) or "default")


def param_groups(model: nn.Module, base_lr: float, weight_decay: float,
                 paramwise: ParamwiseConfig | None) -> list[dict[str, Any]]:
    """Optimizer parameter groups, one per distinct (lr_mult, decay_mult)."""
    groups: dict[tuple[float, float], dict[str, Any]] = {}
    for full_name, param, module in _named_params(model):
        if not param.requires_grad:
            continue
        rule = param_rule(full_name, module, paramwise)
        key = (rule.lr_mult, rule.decay_mult)
        if key not in groups:
            lr = base_lr * rule.lr_mult
            groups[key] = {"params": [], "names": [], "lr": lr, "initial_lr": lr,
                           "weight_decay": weight_decay * rule.decay_mult,
                           "lr_mult": rule.lr_mult, "decay_mult": rule.decay_mult}
        groups[key]["params"].append(param)
        groups[key]["names"].append(full_name)
    if not groups:
        raise ConfigError("the model has no trainable parameters (every parameter is frozen)",
                          hint="check model.backbone.frozen_stages and norm_cfg.requires_grad")
    for group in groups.values():
        log.debug("param group lr x%g, decay x%g: %d tensors", group["lr_mult"],
                  group["decay_mult"], len(group["params"]))
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: SGDConfig | AdamWConfig,
                    *, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` describes over ``model``'s trainable parameters.

    ``lr_scale`` multiplies ``cfg.lr`` (``auto_scale_lr``).
    """
    lr = cfg.lr * lr_scale
    groups = param_groups(model, lr, cfg.weight_decay, cfg.paramwise_cfg)
    if isinstance(cfg, SGDConfig):
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    if isinstance(cfg, AdamWConfig):
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer type {getattr(cfg, 'type', cfg)!r}; "
                      "supported: SGD, AdamW")


def auto_scale_factor(enable: bool, base_batch_size: int, samples_per_gpu: int,
                      world_size: int) -> float:
    """``auto_scale_lr``: total batch / base batch when enabled, else 1."""
    if not enable:
        return 1.0
    factor = samples_per_gpu * world_size / base_batch_size
    log.info("auto_scale_lr: %d processes x %d images = %d per step, base %d: lr x %g",
             world_size, samples_per_gpu, samples_per_gpu * world_size, base_batch_size, factor)
    return factor
