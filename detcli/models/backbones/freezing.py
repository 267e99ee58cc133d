"""Frozen stages and frozen norm statistics, the same way in every backbone.

``frozen_stages = k`` (MMDetection's key) keeps the stem and the first k stages in eval mode
with no gradient; ``norm_eval = True`` keeps every BatchNorm in eval mode while training (its
running statistics frozen, its affine parameters still learned). A backbone calls
:func:`freeze` on the modules its ``frozen_stages`` names and :func:`eval_norms` from its
``train``.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


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
