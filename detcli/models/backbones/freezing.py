"""Frozen stages and frozen norm statistics, the same way in every backbone.

``frozen_stages = k`` (MMDetection's key) keeps the stem and the first k stages in eval mode
with no gradient; ``norm_eval = True`` keeps every BatchNorm in eval mode while training (its
running statistics frozen, its affine parameters still learned). A backbone calls
:func:`freeze` on the modules its ``frozen_stages`` names and :func:`eval_norms` from its
``train``; one with both settings derives from :class:`FrozenStagesBackbone`, whose ``train``
does both.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import TypeVar

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

BackboneT = TypeVar("BackboneT", bound="FrozenStagesBackbone")


def freeze(module: nn.Module) -> None:
    """``module`` in eval mode, none of its parameters learned."""
    module.eval()
    for param in module.parameters():
        param.requires_grad = False


def eval_norms(module: nn.Module) -> None:
    """Every BatchNorm inside ``module`` in eval mode (running statistics frozen)."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


class FrozenStagesBackbone(nn.Module, metaclass=ABCMeta):
    """A backbone with ``frozen_stages`` and ``norm_eval``: after ``nn.Module.train(mode)`` its
    frozen stages go back to eval mode and, while training with ``norm_eval``, so does every
    BatchNorm."""

    norm_eval: bool

    @abstractmethod
    def _freeze_stages(self) -> None:
        """:func:`freeze` the modules ``frozen_stages`` names."""

    def train(self: BackboneT, mode: bool = True) -> BackboneT:
        """Frozen stages stay in eval mode; with ``norm_eval`` so do all BatchNorm layers."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            eval_norms(self)
        return self
