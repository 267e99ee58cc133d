"""Training orders that depend on (seed, epoch) alone, and aspect-ratio grouping.

:class:`EpochShuffleSampler` is a single process's shuffled order: a permutation drawn from
its own generator seeded with (seed, epoch) at every :meth:`set_epoch`, so it does not depend
on what else drew from the loader's generator (the workers' base seed, which a DataLoader
with persistent workers draws only in its first epoch).

Aspect-ratio grouping: batches whose images share an orientation, so padding wastes little.

N images in the dataset, B images per batch, R replicas (processes) when distributed.

Group 1 holds images with width >= height, group 0 those with width < height, as
MMDetection's GroupSampler groups landscape and portrait images. Within an epoch every batch
comes from one group; a group whose size is not a multiple of B is topped up with its own
images again (MMDetection's padding) unless ``drop_last``. Batches are then shuffled, and
with R replicas the batch list is topped up to a multiple of R and dealt out round robin, so
every process runs the same number of steps. The order depends only on ``seed + epoch``
(call :meth:`GroupedBatchSampler.set_epoch` each epoch).
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from detcli.errors import DataError


class EpochShuffleSampler(Sampler[int]):
    """A permutation of ``range(num_samples)`` per epoch, from (seed, epoch) only."""

    def __init__(self, num_samples: int, seed: int = 0) -> None:
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(self.num_samples, generator=g).tolist()

    def __len__(self) -> int:
        return self.num_samples


def aspect_ratio_groups(dataset: Any) -> np.ndarray:
    """(N,) int64 group per image from ``dataset.img_infos``: 1 if width >= height else 0."""
    infos = getattr(dataset, "img_infos", None)
    if infos is None or len(infos) != len(dataset):
        raise DataError(f"aspect-ratio grouping needs dataset.img_infos with width and height; "
                        f"{type(dataset).__name__} has none")
    sizes = np.array([[info["width"], info["height"]] for info in infos], dtype=np.int64)
    return (sizes[:, 0] >= sizes[:, 1]).astype(np.int64).reshape(-1)  # (N,)


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of B indices, each from one group of ``group_ids``; see the module docstring."""

    def __init__(self, group_ids: Sequence[int] | np.ndarray, batch_size: int, *, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.group_ids = np.asarray(group_ids, dtype=np.int64).reshape(-1)  # (N,)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches_total(self) -> int:
        counts = np.bincount(self.group_ids) if len(self.group_ids) else np.zeros(0, np.int64)
        per_group = counts // self.batch_size if self.drop_last else -(-counts // self.batch_size)
        return int(per_group.sum())

    def __len__(self) -> int:
        return -(-self._num_batches_total() // self.num_replicas)

    def _all_batches(self) -> np.ndarray:
        """(T, B) index batches of this epoch, for all replicas together."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        n = len(self.group_ids)
        order = torch.randperm(n, generator=g).numpy() if self.shuffle else np.arange(n)  # (N,)
        chunks = []
        for group in np.unique(self.group_ids):
            members = order[self.group_ids[order] == group]  # (n_g,) in epoch order
            size = len(members) // self.batch_size * self.batch_size if self.drop_last \
                else -(-len(members) // self.batch_size) * self.batch_size
            if size:
                chunks.append(np.resize(members, size).reshape(-1, self.batch_size))  # (t_g, B)
        if not chunks:
            return np.zeros((0, self.batch_size), dtype=np.int64)
        batches = np.concatenate(chunks)  # (T, B)
        if self.shuffle:
            batches = batches[torch.randperm(len(batches), generator=g).numpy()]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()  # (T, B)
        if self.num_replicas > 1 and len(batches):
            batches = np.resize(batches, (len(self) * self.num_replicas, self.batch_size))
            batches = batches[self.rank::self.num_replicas]  # (T / R, B)
        for batch in batches:
            yield batch.tolist()
