"""How a mixed-image transform (Mosaic, MixUp) draws the other images it mixes in.

MMDetection wraps the dataset in a ``MultiImageMixDataset`` that asks each mixing transform
for indices (``get_indexes``) and loads those images through the inner dataset's pipeline.
Here the dataset itself is the source: :meth:`DetDataset.pipeline_input` puts a
:class:`MixSourceRef` to it under ``results["mix_source"]``, and :class:`Compose` calls a
:class:`MixImageTransform` as ``transform.mix(results, draws)`` with a :class:`MixDraws`
that loads image ``j`` by running the pipeline's *loading steps* (every step before the first
mixed-image transform, usually ``LoadImageFromFile`` and ``LoadAnnotations``) on
``pipeline_input(j)``: the images MMDetection's wrapper hands over.

Determinism: a transform draws its indices (and everything else) from numpy's global state,
as MMDetection's do (its ``transforms.py`` imports ``numpy.random`` as ``random``). A training
sample runs inside ``seeded_draws(sample_seed(seed, epoch,
index))`` (:mod:`detcli.engine.seed`), so the extra images a sample mixes in are a function of
(seed, epoch, index): the same in any loader worker, the main process or any rank of a
distributed run, and after a resume. The source holds no state of its own; a worker has its
own copy of the dataset, so nothing is shared between processes.

Masks: the mixing transforms and RandomAffine move boxes only. A sample that carries
``gt_masks`` stops with a :class:`~detcli.errors.ConfigError` naming the transform
(:func:`refuse_masks`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Protocol

import numpy as np

from detcli.errors import ConfigError, DataError

MAX_LOAD_TRIES = 10  # extra images tried when the loading steps reject one


class MixSource(Protocol):
    """What a mixing transform needs of its dataset: its size and an image's input dict."""

    def __len__(self) -> int: ...

    def pipeline_input(self, idx: int) -> dict[str, Any]: ...


class MixSourceRef:
    """A reference to a dataset inside a results dict: copying the dict (``deepcopy`` of a
    cached sample, MultiScaleFlipAug's views) copies the reference, never the dataset."""

    __slots__ = ("dataset",)

    def __init__(self, dataset: MixSource) -> None:
        self.dataset = dataset

    def __copy__(self) -> MixSourceRef:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> MixSourceRef:
        return self

    def __repr__(self) -> str:
        return f"MixSourceRef({type(self.dataset).__name__}, {len(self.dataset)} images)"


Loading = Callable[[dict[str, Any]], "dict[str, Any] | None"]


class MixDraws:
    """Draws and loads the extra images of one sample for the transform ``who``."""

    def __init__(self, source: MixSourceRef | None, loading: Loading, who: str) -> None:
        if source is None:
            raise ConfigError(
                f"{who} mixes in other images of its dataset, but this pipeline runs without "
                "one (a test pipeline, or a results dict built by hand)",
                hint=f"use {who} in data.train.pipeline, or give the results a 'mix_source'")
        self.dataset = source.dataset
        self.loading = loading
        self.who = who

    def __len__(self) -> int:
        return len(self.dataset)

    def draw_index(self) -> int:
        """A uniform index in [0, N) (numpy: MMDetection's ``random.randint(0, len(dataset))``)."""
        return int(np.random.randint(0, len(self.dataset)))

    def load(self, index: int) -> dict[str, Any]:
        """Image ``index`` through the loading steps; when they reject it (None), the next
        drawn index, up to :data:`MAX_LOAD_TRIES` images."""
        for _ in range(MAX_LOAD_TRIES):
            out = self.loading(self.dataset.pipeline_input(index))
            if out is not None:
                return out
            index = self.draw_index()
        raise DataError(f"{self.who}: the loading steps rejected {MAX_LOAD_TRIES} images in a row")


class MixImageTransform(ABC):
    """Base of the transforms that mix in images drawn from the dataset (Mosaic, MixUp).

    :class:`~detcli.data.transforms.compose.Compose` calls :meth:`mix` with the draws; the
    steps before the first such transform of a pipeline are its loading steps.
    """

    @abstractmethod
    def mix(self, results: dict[str, Any], draws: MixDraws) -> dict[str, Any] | None:
        """``results`` with images of ``draws`` mixed in (None: draw another sample)."""

    def __call__(self, results: dict[str, Any]) -> dict[str, Any] | None:
        raise ConfigError(f"{type(self).__name__} must run inside a Compose pipeline, which "
                          "gives it the dataset's images to mix in")


def refuse_masks(results: dict[str, Any], who: str) -> None:
    """ConfigError when the sample carries instance masks: ``who`` moves boxes only."""
    if results.get("mask_fields") or "gt_masks" in results:
        raise ConfigError(
            f"{who} moves boxes only, and this sample has instance masks (gt_masks)",
            hint=f"drop with_mask from LoadAnnotations, or {who} from the pipeline")
