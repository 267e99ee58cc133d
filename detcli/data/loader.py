"""Data loaders: sampling order, worker seeding, pinned memory, and skipping bad images.

N images in the dataset, B = ``samples_per_gpu`` images per batch.

Determinism: the loader owns a ``torch.Generator`` seeded with ``seed + rank``. It draws the
shuffle order (single process) and, at the start of every epoch, the base seed of the
workers; torch seeds worker ``i`` with ``base + i`` and :func:`worker_init_fn` passes that on
to ``numpy`` and ``random``, which the transforms draw from. Distributed runs use
``DistributedSampler`` (seeded with ``seed``, call :func:`set_epoch` every epoch).

Training loaders (``per_sample_seeds=True``) go further: the batch sampler hands the dataset
``(index, epoch)`` keys (:class:`EpochKeyedBatches`) and :class:`SeededSamples` loads each
sample inside :func:`~detcli.engine.seed.seeded_draws` of (seed, epoch, index), and a single
process shuffles with :class:`~detcli.data.samplers.EpochShuffleSampler`. A sample's
augmentation is then the same whichever worker (or the main process) loads it and whatever
was loaded before, so an epoch started at batch k (a resumed run) gives exactly the batches an
uninterrupted one gives from k on, with any number of workers, persistent or not.

Bad images: :class:`SkipBadImages` wraps a dataset for ``data.on_bad_image = "skip"``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import tempfile
import weakref
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import (BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler,
                              Sampler, SequentialSampler)

from detcli.data.collate import collate
from detcli.data.samplers import EpochShuffleSampler, GroupedBatchSampler, aspect_ratio_groups
from detcli.engine.seed import sample_seed, seeded_draws
from detcli.errors import DataError, writing

log = logging.getLogger(__name__)


def worker_init_fn(worker_id: int) -> None:
    """Seed ``numpy`` and ``random`` in a worker from its torch seed (base seed + worker id)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _dist_info(distributed: bool) -> tuple[int, int] | None:
    """(rank, world size) when running distributed, else None."""
    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if distributed:
        log.info("distributed=True but torch.distributed is not initialised: one process")
    return None


class EpochKeyedBatches(Sampler[list[tuple[int, int]]]):
    """The batches of ``batch_sampler`` as ``(index, epoch)`` keys, from batch ``first`` on.

    :func:`set_epoch` sets both; the order itself is ``batch_sampler``'s, computed in full
    (so the generator it draws from moves as in an epoch started at batch 0) and then skipped.
    """

    def __init__(self, batch_sampler: Any) -> None:
        self.batch_sampler = batch_sampler
        self.epoch, self.first = 0, 0

    def __iter__(self):
        epoch = self.epoch
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.first:
                yield [(int(index), epoch) for index in batch]

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.first, 0)


class SeededSamples(Dataset):
    """``dataset[index]`` loaded inside ``seeded_draws(sample_seed(seed, epoch, index))``.

    Keys are ``(index, epoch)`` pairs from :class:`EpochKeyedBatches` (a plain index means
    epoch 0). Attributes (``CLASSES``, ``img_infos``, ...) are the wrapped dataset's.
    ``on_epoch(epoch)``, when given, runs before each sample is loaded (in the process that
    loads it): a dataset's :meth:`~detcli.data.datasets.base.DetDataset.set_epoch` chooses
    that epoch's pipeline there, so a pipeline switch reaches every worker, persistent or not.
    """

    def __init__(self, dataset: Dataset, seed: int,
                 on_epoch: Callable[[int], None] | None = None) -> None:
        self.dataset, self.seed, self.on_epoch = dataset, seed, on_epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        if self.on_epoch is not None:
            self.on_epoch(epoch)
        with seeded_draws(sample_seed(self.seed, epoch, index)):
            return self.dataset[index]


def build_dataloader(
    dataset: Dataset,
    samples_per_gpu: int,
    workers_per_gpu: int,
    shuffle: bool = True,
    seed: int = 0,
    distributed: bool = False,
    group_by_aspect_ratio: bool = False,
    pin_memory: bool | None = None,
    persistent_workers: bool = False,
    drop_last: bool = False,
    collate_fn: Callable[[list[Any]], Any] = collate,
    per_sample_seeds: bool = False,
    on_epoch: Callable[[int], None] | None = None,
) -> DataLoader:
    """A DataLoader of ``collate_fn`` batches (by default ``(ImageBatch, DetTargets | None)``).

    ``pin_memory`` None means "when CUDA is available"; ``persistent_workers`` only applies with
    workers. ``group_by_aspect_ratio`` batches landscape and portrait images apart
    (:class:`~detcli.data.samplers.GroupedBatchSampler`). ``per_sample_seeds`` gives every
    sample its own random draws from (seed, epoch, index) (module docstring); the loader's
    ``dataset`` is then a :class:`SeededSamples` and its ``batch_sampler`` an
    :class:`EpochKeyedBatches`; ``on_epoch(epoch)`` then runs before each sample is loaded.
    """
    if samples_per_gpu < 1 or workers_per_gpu < 0:
        raise DataError(f"samples_per_gpu must be >= 1 and workers_per_gpu >= 0, got "
                        f"{samples_per_gpu} and {workers_per_gpu}")
    if len(dataset) == 0:  # type: ignore[arg-type]
        report = getattr(dataset, "filter_report", None)
        raise DataError(f"the dataset {getattr(dataset, 'source', '')} has no images to load"
                        + (f" ({report})" if report is not None else ""),
                        hint="`det data check CONFIG` shows what it holds")
    ranks = _dist_info(distributed)
    rank, world = ranks if ranks else (0, 1)
    generator = torch.Generator().manual_seed(seed + rank)
    batch_kwargs: dict[str, Any]
    if group_by_aspect_ratio:
        sampler = GroupedBatchSampler(aspect_ratio_groups(dataset), samples_per_gpu, shuffle=shuffle,
                                      seed=seed, drop_last=drop_last, num_replicas=world, rank=rank)
        batch_kwargs = {"batch_sampler": sampler}
    else:
        if ranks:
            base = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=shuffle,
                                      seed=seed, drop_last=drop_last)
        elif shuffle and per_sample_seeds:
            base = EpochShuffleSampler(len(dataset), seed)  # type: ignore[arg-type]
        elif shuffle:
            base = RandomSampler(dataset, generator=generator)
        else:
            base = SequentialSampler(dataset)
        batch_kwargs = {"sampler": base, "batch_size": samples_per_gpu, "drop_last": drop_last}
    if per_sample_seeds:
        batches = (batch_kwargs["batch_sampler"] if group_by_aspect_ratio
                   else BatchSampler(base, samples_per_gpu, drop_last))
        dataset = SeededSamples(dataset, seed, on_epoch)
        batch_kwargs = {"batch_sampler": EpochKeyedBatches(batches)}
    return DataLoader(
        dataset,
        num_workers=workers_per_gpu,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        worker_init_fn=worker_init_fn if workers_per_gpu else None,
        generator=generator,
        persistent_workers=persistent_workers and workers_per_gpu > 0,
        **batch_kwargs,
    )


def set_epoch(loader: DataLoader, epoch: int, first_batch: int = 0) -> None:
    """Tell the loader's samplers which epoch starts (distributed and grouped orders use it);
    a ``per_sample_seeds`` loader also starts that epoch at batch ``first_batch``."""
    batch_sampler = loader.batch_sampler
    if isinstance(batch_sampler, EpochKeyedBatches):
        batch_sampler.epoch, batch_sampler.first = epoch, first_batch
        batch_sampler = batch_sampler.batch_sampler
    elif first_batch:
        raise ValueError("starting an epoch inside needs a loader built with per_sample_seeds")
    for sampler in (batch_sampler, getattr(batch_sampler, "sampler", None)):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


@dataclass
class SkippedImage:
    """One image left out of training: its dataset index, file and why."""

    index: int
    file: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SkipBadImages(Dataset):
    """Serve ``dataset``, replacing an image whose loading raises DataError by another one.

    Each failure is appended as one JSON line to ``record_file`` (a temporary file unless
    given, e.g. ``work_dir/skipped_images.jsonl``) with one ``write`` call, so worker processes
    of any start method add to it safely and :meth:`skipped` in the main process sees them all.
    The replacement is a random index (numpy's global state, seeded per worker) not yet known
    to be bad. A sample the pipeline rejects (None) is replaced the same way but not recorded.
    After ``max_tries`` failures in a row it raises.
    """

    def __init__(self, dataset: Dataset, max_tries: int = 10,
                 record_file: str | os.PathLike | None = None) -> None:
        self.dataset = dataset
        self.max_tries = max_tries
        if record_file is None:
            fd, record_file = tempfile.mkstemp(prefix="det-skipped-", suffix=".jsonl")
            os.close(fd)
            weakref.finalize(self, _remove_if_owner, str(record_file), os.getpid())
        self.record_file = str(record_file)
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:  # CLASSES, img_infos, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def set_epoch(self, epoch: int) -> None:
        """The wrapped dataset's pipeline for ``epoch`` (DetDataset.set_epoch)."""
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]

    def _file(self, index: int) -> str:
        infos = getattr(self.dataset, "img_infos", None)
        return str(infos[index].get("filename", "")) if infos is not None else ""

    def _record(self, record: SkippedImage) -> None:
        log.warning("skipping image %s (index %d): %s", record.file, record.index, record.reason)
        line = (json.dumps(record.to_dict()) + "\n").encode()
        with writing(self.record_file, "the list of skipped images"):
            fd = os.open(self.record_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)

    def _another(self, tried: int) -> int:
        n = len(self)
        for _ in range(4 * n):
            j = int(np.random.randint(n))
            if j not in self._bad and j != tried:
                return j
        raise DataError(f"every image of the dataset ({n}) failed to load")

    def __getitem__(self, index: int) -> Any:
        reason = ""
        for _ in range(self.max_tries):
            try:
                sample = self.dataset[index]
            except DataError as exc:
                reason = str(exc)
                self._bad.add(index)
                self._record(SkippedImage(index, self._file(index), reason))
            else:
                if sample is not None:
                    return sample
                reason = "the pipeline rejected the sample"
            index = self._another(index)
        raise DataError(f"{self.max_tries} images in a row could not be used; last: {reason}",
                        hint="run `det data check` on this config")

    def skipped(self) -> list[SkippedImage]:
        """The images skipped so far, by the main process and all workers; one record per
        image (the first), though workers started afresh each epoch meet it again."""
        first: dict[int, SkippedImage] = {}
        if os.path.exists(self.record_file):
            with open(self.record_file, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        record = SkippedImage(**json.loads(line))
                        first.setdefault(record.index, record)
        return list(first.values())

    @property
    def num_skipped(self) -> int:
        return len(self.skipped())


def _remove_if_owner(path: str, owner_pid: int) -> None:
    """Delete the temporary record file, from the process that made it only."""
    if os.getpid() == owner_pid:
        with contextlib.suppress(OSError):
            os.remove(path)
