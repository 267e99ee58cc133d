"""How the network runs on the device: memory format, ``torch.compile``, pinned host memory.

The ``runtime`` table of a config::

    [runtime]
    channels_last = "auto"    # "auto": on for CUDA, off for the CPU; or true / false
    compile = false           # torch.compile the network (det train --compile)
    compile_backend = "inductor"

``channels_last`` stores every 4-D weight of the detector (backbone, neck, heads) and the
input batch as NHWC: cuDNN's convolutions with bf16/fp16 tensor cores run fastest that way.
On the CPU it is off by default (the oneDNN convolutions of a small model gain nothing) but
may be switched on; either layout gives the same result to rounding.

``compile`` compiles the *network* -- the detector's ``forward``: backbone, neck and the heads'
convolutions, the part with static shapes -- and nothing else: target assignment, the losses
and post-processing (decode, NMS) stay eager, so their data-dependent parts cause no graph
breaks or recompilations. The compiled function takes the module as its first argument and is
bound to the instance, so a ``copy.deepcopy`` of the model (the EMA average) runs its own
weights; the state dict keeps its keys. The first steps are slow while it compiles (a few
minutes for an R50 model with inductor).

Pinned host memory (``pin_memory``) is used by the loader when the run's device is CUDA, so
the step's ``non_blocking`` copies overlap the previous step's work.
"""

from __future__ import annotations

import logging
import types
from typing import Literal, Union

import torch
from torch import nn

from detcli.config.schema import Schema
from detcli.errors import ConfigError

log = logging.getLogger(__name__)

CompileBackend = Literal["inductor", "aot_eager", "eager", "cudagraphs"]


class RuntimeConfig(Schema):
    channels_last: Union[Literal["auto"], bool] = "auto"  # "auto": on for CUDA only
    compile: bool = False  # torch.compile the network (not the loss or post-processing)
    compile_backend: CompileBackend = "inductor"  # "aot_eager" needs no C compiler


def uses_channels_last(setting: Union[Literal["auto"], bool], device: torch.device) -> bool:
    """Whether ``runtime.channels_last`` is on for ``device``."""
    if setting == "auto":
        return device.type == "cuda"
    return bool(setting)


def memory_format(cfg: RuntimeConfig, device: torch.device) -> torch.memory_format:
    """The memory format of the network's weights and inputs on ``device``."""
    if uses_channels_last(cfg.channels_last, device):
        return torch.channels_last
    return torch.contiguous_format


def compile_network(model: nn.Module, backend: CompileBackend = "inductor") -> nn.Module:
    """Compile ``model.forward`` in place (the module docstring says why it is bound this way);
    returns ``model``. Calling it twice is an error rather than a second compilation."""
    if isinstance(model.__dict__.get("forward"), types.MethodType):
        raise ConfigError(f"{type(model).__name__}.forward is already compiled")
    compiled = torch.compile(type(model).forward, backend=backend)
    model.forward = types.MethodType(compiled, model)  # type: ignore[method-assign]
    return model


def prepare_network(model: nn.Module, cfg: RuntimeConfig, device: torch.device) -> nn.Module:
    """Apply ``runtime``'s memory format and compilation to a model already on ``device``."""
    fmt = memory_format(cfg, device)
    if fmt is torch.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if cfg.compile:
        compile_network(model, cfg.compile_backend)
    log.info("network on %s: %s, %s", device,
             "channels_last" if fmt is torch.channels_last else "contiguous (NCHW)",
             f"compiled ({cfg.compile_backend})" if cfg.compile else "eager")
    return model
