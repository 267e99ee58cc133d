"""What a training process sets up around a run and puts back after it.

:func:`training_process`: join the process group when started by torchrun (and leave it at the
end if the run joined it), put each rank on its own GPU, and restore torch's intra-op thread
count. :func:`work_dir_logging`: prepare the work directory on rank 0 (create it, remove the
``*.pth.tmp`` a killed save left, write ``config.toml``, send the log to ``train.log``) and
quiet the other ranks to warnings, until the run ends. :func:`limit_threads`: one thread per
process when loader workers would fight torch's threads for the cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from detcli.config.loader import LoadedConfig
from detcli.engine import distributed as D
from detcli.engine.hooks.checkpoint_hook import remove_partial_saves
from detcli.engine.work_dir import attach_log_file, detach_log_file, make_work_dir, write_config

log = logging.getLogger(__name__)


@contextlib.contextmanager
def training_process(cfg: Any, device: torch.device
                     ) -> Iterator[tuple[D.DistInfo, torch.device]]:
    """(this process's place in the run, its device) while the run lasts."""
    threads_before = torch.get_num_threads()
    joined_before = D.is_distributed()
    leave_group = False
    try:
        dist = D.init_distributed(cfg.dist_params.backend, device.type, cfg.dist_params.timeout)
        leave_group = dist.enabled and not joined_before
        if dist.enabled and device.type == "cuda":
            device = torch.device("cuda", dist.local_rank)
        yield dist, device
    finally:
        if leave_group:
            D.cleanup()
        torch.set_num_threads(threads_before)


@contextlib.contextmanager
def work_dir_logging(loaded: LoadedConfig, work_dir: Path, dist: D.DistInfo) -> Iterator[None]:
    """Rank 0 writes to ``work_dir`` and ``train.log``; the others only warn (module docstring)."""
    handler: logging.Handler | None = None
    quiet_level: int | None = None
    try:
        if dist.is_main:
            make_work_dir(work_dir)
            remove_partial_saves(work_dir)
            write_config(work_dir, loaded)
            handler = attach_log_file(work_dir, loaded.cfg.log_level)
        else:  # rank 0 speaks for the run
            quiet_level = logging.getLogger("detcli").level
            logging.getLogger("detcli").setLevel(logging.WARNING)
        yield
    finally:
        if handler is not None:
            detach_log_file(handler)
        if quiet_level is not None:
            logging.getLogger("detcli").setLevel(quiet_level)


def limit_threads(cfg: Any) -> None:
    """MMDetection's ``setup_multi_processes``: with loader workers and no
    ``OMP_NUM_THREADS``, one intra-op thread per process (workers and torch's threads would
    otherwise fight over the cores). :func:`training_process` restores the count."""
    if "OMP_NUM_THREADS" not in os.environ and cfg.data.workers_per_gpu > 1:
        torch.set_num_threads(1)
        log.info("OMP_NUM_THREADS is not set and workers_per_gpu > 1: torch uses one thread "
                 "in the training process (set OMP_NUM_THREADS to choose)")
