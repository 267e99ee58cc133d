"""Loss bookkeeping that never waits for the device between log points.

T loss terms (``loss_cls``, ``loss_bbox``, ... and ``grad_norm``), R processes.

Each iteration :meth:`LossMeter.add` adds the detached loss tensors to running sums on the
device and records, per term, the first iteration whose value was not finite, with tensor ops
only. :meth:`LossMeter.flush` (every ``log_config.interval`` iterations and at the end of an
epoch) moves everything to the host in one transfer, averaged over the iterations and, when
distributed, over the R processes; it reports the first non-finite (term, iteration) seen
on any process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from detcli.engine.distributed import all_reduce, is_distributed

NO_ITER = 2**62  # "no non-finite value yet" in the first-bad-iteration tensors


@dataclass
class Flushed:
    """The means since the last flush, and where a value first went non-finite."""

    means: dict[str, float]  # term -> mean over iterations (and processes)
    count: int  # iterations averaged
    bad_term: str | None = None  # the first term that was NaN or infinite
    bad_iter: int | None = None  # its iteration (1-based, as logged)


class LossMeter:
    """Running sums of loss tensors and the first non-finite iteration of each term."""

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._first_bad: dict[str, Tensor] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, values: dict[str, Tensor], iteration: int) -> None:
        """Add one iteration's values (0-d tensors); ``iteration`` is 1-based."""
        for name, value in values.items():
            value = value.detach().float()
            finite = torch.isfinite(value)
            if name not in self._sums:
                self._sums[name] = torch.zeros((), device=value.device)
                self._first_bad[name] = torch.full((), NO_ITER, dtype=torch.long,
                                                   device=value.device)
            # a NaN must not poison the sum shown for later intervals: add 0 instead
            self._sums[name] += torch.where(finite, value, torch.zeros_like(value))
            here = torch.full_like(self._first_bad[name], iteration)
            self._first_bad[name] = torch.where(finite, self._first_bad[name],
                                                torch.minimum(self._first_bad[name], here))
        self._count += 1

    def flush(self) -> Flushed:
        """Means since the last flush (one host transfer), then reset."""
        names = list(self._sums)
        sums, first_bad, count = self._sums, self._first_bad, self._count
        self._sums, self._first_bad, self._count = {}, {}, 0
        if not names:
            return Flushed({}, 0)
        totals = torch.stack([sums[n] for n in names] + [torch.tensor(
            float(count), device=sums[names[0]].device)])  # (T + 1,)
        bad = torch.stack([first_bad[n] for n in names])  # (T,)
        if is_distributed():
            all_reduce(totals, "sum")
            all_reduce(bad, "min")
        host_totals, host_bad = totals.tolist(), bad.tolist()  # the one sync
        num = max(host_totals[-1], 1.0)
        means = {n: v / num for n, v in zip(names, host_totals[:-1])}
        bad_iter = min(host_bad)
        if bad_iter >= NO_ITER:
            return Flushed(means, count)
        return Flushed(means, count, names[host_bad.index(bad_iter)], int(bad_iter))
