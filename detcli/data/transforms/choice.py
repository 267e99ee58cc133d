"""RandomChoice: apply one of several transform lists, picked per sample (MMCV's RandomChoice).

B branches, each a list of transform configs run in order as a :class:`Compose`. The branch is
drawn per sample with ``np.random.choice(B, p=prob)`` (uniform when ``prob`` is None), MMCV's
one draw, from numpy's global state like every other random step (the data loader seeds it
per worker), so a seed gives the same branch and then the same draws inside it as MMCV.

A branch that rejects the sample (its RandomCrop left no GT) rejects it for the whole pipeline:
the step returns None and the dataset draws another image. A mixed-image step (Mosaic, MixUp)
cannot sit in a branch: the images it mixes in go through the outer pipeline's loading steps.
DETR's training pipeline (``presets/detr_r50.toml``) is the example: a multi-scale resize, or
a resize, a random crop and a multi-scale resize.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import numpy as np
from pydantic import Field, model_validator

from detcli.config.schema import Maybe, Schema
from detcli.data.transforms.compose import Compose, TransformSpec
from detcli.data.transforms.mixing import MixImageTransform
from detcli.errors import ConfigError
from detcli.registry import TRANSFORMS, TransformConfig


def check_choice_args(num_branches: int, prob: Optional[list[float]]) -> None:
    """Raise ValueError for a branch probability list MMCV's RandomChoice would reject."""
    if prob is None:
        return
    if len(prob) != num_branches:
        raise ValueError(f"prob has {len(prob)} values for {num_branches} transform lists; give "
                         "one probability per list")
    if any(p < 0 for p in prob) or not math.isclose(sum(prob), 1.0, abs_tol=1e-6):
        raise ValueError(f"prob must be non-negative and sum to 1, got {prob} (sum {sum(prob)})")


class RandomChoiceConfig(Schema):
    type: Literal["RandomChoice"] = "RandomChoice"
    transforms: list[list[TransformConfig]] = Field(min_length=1)  # the branches
    prob: Maybe[list[float]] = None  # one per branch; None: uniform

    @model_validator(mode="after")
    def _check(self) -> RandomChoiceConfig:
        check_choice_args(len(self.transforms), self.prob)
        return self


@TRANSFORMS.register(RandomChoiceConfig)
class RandomChoice:
    """Run one branch of ``transforms``, drawn per sample (module docstring)."""

    def __init__(self, *, transforms: list[list[TransformSpec]],
                 prob: Optional[list[float]] = None) -> None:
        check_choice_args(len(transforms), prob)
        self.branches = [Compose(branch) for branch in transforms]
        self.prob = None if prob is None else [float(p) for p in prob]
        for k, branch in enumerate(self.branches):
            mixing = [name for name, t in zip(branch.names, branch.transforms)
                      if isinstance(t, MixImageTransform)]
            if mixing:
                raise ConfigError(
                    f"RandomChoice branch {k} holds the mixed-image step {mixing[0]}; a branch "
                    "has no loading steps to draw the other images through",
                    hint="put Mosaic / MixUp in the pipeline itself, before the RandomChoice")

    def __repr__(self) -> str:
        return f"RandomChoice(branches={self.branches!r}, prob={self.prob})"

    def choose_branch(self) -> int:
        """The index of the branch for one sample (MMCV's ``random_pipeline_index``)."""
        return int(np.random.choice(np.arange(len(self.branches)), p=self.prob))

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        return self.branches[self.choose_branch()](results)
