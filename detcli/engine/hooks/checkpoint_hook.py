"""``CheckpointHook``: ``epoch_N.pth`` / ``iter_N.pth`` every ``checkpoint_config.interval``.

Written by rank 0 (every rank gives it its random generators) right after the EMA update and
*before* the evaluation of the same epoch, so an evaluation that fails cannot cost a trained
epoch; the checkpoint records that its evaluation is still due, and a run resumed from it
evaluates first (:mod:`detcli.engine.resume`). Also written at the last epoch and when a run
stops early; when the run ends, a last checkpoint written before the run's last evaluation is
written again with it, so a finished run's checkpoint holds its final metrics and best. ``latest.pth`` then names the newest one (a relative symbolic link, replaced
atomically; a copy where links are not possible), and only the newest ``max_keep_ckpts``
periodic checkpoints are kept (-1 keeps all; ``best_*`` and ``latest`` are never pruned).

A write goes through ``NAME.tmp`` (:func:`~detcli.engine.checkpoint.atomic_save`); a process
killed during one leaves that file behind, and :func:`remove_partial_saves` deletes it when
the next run starts in the work directory.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from detcli.engine.context import ABOVE_NORMAL, Hook, TrainContext
from detcli.errors import writing

log = logging.getLogger(__name__)

LATEST = "latest.pth"


def point_latest(path: Path) -> Path:
    """Make ``latest.pth`` next to ``path`` name it, atomically."""
    latest = path.parent / LATEST
    tmp = path.parent / f".{LATEST}.tmp"
    with writing(latest, "the latest-checkpoint link"):
        tmp.unlink(missing_ok=True)
        try:
            os.symlink(path.name, tmp)
        except OSError:  # no symlinks here (some Windows setups, some mounts): copy
            shutil.copyfile(path, tmp)
        os.replace(tmp, latest)
    return latest


def remove_partial_saves(work_dir: Path) -> list[Path]:
    """Delete the ``*.pth.tmp`` files (and ``.latest.pth.tmp``) a killed save left behind."""
    if not work_dir.is_dir():
        return []
    leftovers = sorted(p for p in work_dir.iterdir()
                       if p.name.endswith(".pth.tmp") or p.name == f".{LATEST}.tmp")
    for path in leftovers:
        with writing(path, "a leftover partial checkpoint"):
            path.unlink(missing_ok=True)
        log.warning("removed %s: a checkpoint write that never finished (the run was killed "
                    "while saving)", path)
    return leftovers


def prune(work_dir: Path, prefix: str, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` ``{prefix}_N.pth`` files; returns those deleted."""
    if keep < 0:
        return []
    pattern = re.compile(rf"^{prefix}_(\d+)\.pth$")
    found = sorted((int(m.group(1)), p) for p in work_dir.iterdir()
                   if (m := pattern.match(p.name)))
    doomed = [p for _, p in found[: max(len(found) - keep, 0)]]
    for path in doomed:
        with writing(path, "an old checkpoint (max_keep_ckpts)"):
            path.unlink(missing_ok=True)
        log.info("removed %s (max_keep_ckpts = %d)", path.name, keep)
    return doomed


class CheckpointHook(Hook):
    """Saves periodic checkpoints, points ``latest.pth`` at them, prunes old ones."""

    priority = ABOVE_NORMAL + 2  # after the EMA update (40), before evaluation (45)

    def __init__(self, *, interval: int = 1, max_keep_ckpts: int = -1) -> None:
        self.interval = interval
        self.max_keep_ckpts = max_keep_ckpts
        self.saved: list[Path] = []
        self._last_saved_iter = -1
        self._saved_before_eval = False  # the last save preceded an evaluation at its iteration

    def _save(self, ctx: TrainContext, name: str) -> None:
        self._last_saved_iter = ctx.state.iter
        self._saved_before_eval = ctx.state.metrics_iter != ctx.state.iter
        path = ctx.save_checkpoint(ctx.work_dir / f"{name}.pth")  # on every rank
        if not ctx.dist.is_main:
            return
        point_latest(path)
        if path not in self.saved:
            self.saved.append(path)
        prefix = name.split("_")[0]
        for gone in prune(ctx.work_dir, prefix, self.max_keep_ckpts):
            if gone in self.saved:
                self.saved.remove(gone)

    def after_epoch(self, ctx: TrainContext) -> None:
        state = ctx.state
        if state.by_epoch and (state.epoch % self.interval == 0 or state.finished
                               or state.stop_reason):
            self._save(ctx, f"epoch_{state.epoch}")

    def after_iter(self, ctx: TrainContext) -> None:
        state = ctx.state
        if not state.by_epoch and (state.iter % self.interval == 0 or state.finished
                                   or state.stop_reason):
            self._save(ctx, f"iter_{state.iter}")

    def after_run(self, ctx: TrainContext) -> None:
        """A run that ended between checkpoints (early stopping mid-interval) saves its end;
        one whose last checkpoint preceded its last evaluation saves it again."""
        state = ctx.state
        name = f"epoch_{state.epoch}" if state.by_epoch else f"iter_{state.iter}"
        if self._last_saved_iter != state.iter:
            self._save(ctx, name)
        elif self._saved_before_eval and state.metrics_iter == state.iter:
            self._save(ctx, name)  # again, now with the run's last evaluation
