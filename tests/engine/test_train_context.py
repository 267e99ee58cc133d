"""The typed training context hooks receive, and the two stop rules of the one loop.

Tiny RetinaNet runs (``conftest.tiny_config``: 24 images, 4 per batch, so 6 iterations an
epoch); a recording hook writes down each point it is called at.
"""

from __future__ import annotations

import pytest

from detcli.engine.checkpoint import read_checkpoint
from detcli.engine.context import Hook, TrainContext
from detcli.engine.state import EpochBased, IterBased, TrainState
from detcli.engine.trainer import train_detector

pytestmark = pytest.mark.usefixtures("one_thread")


def test_epoch_based_rule_ends_after_its_last_epoch_and_counts_inside_epochs():
    state = TrainState(rule=EpochBased(3), iters_per_epoch=4)
    assert (state.by_epoch, state.max_epochs, state.max_iters) == (True, 3, 12)
    state.epoch, state.iter, state.inner_iter = 2, 11, 3
    assert not state.finished and state.log_count == 3  # the epoch's 3rd iteration
    state.epoch, state.iter, state.inner_iter = 3, 12, 4
    assert state.finished


def test_iteration_based_rule_ends_at_max_iters_and_counts_over_the_run():
    state = TrainState(rule=IterBased(10), iters_per_epoch=4)
    assert (state.by_epoch, state.max_epochs, state.max_iters) == (False, None, 10)
    state.epoch, state.iter, state.inner_iter = 2, 9, 1
    assert not state.finished and state.log_count == 9
    state.iter, state.inner_iter = 10, 2  # inside epoch 3
    assert state.finished


class Recorder(Hook):
    """(point, epoch, iter) of every call, and the contexts it was handed."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.contexts: set[int] = set()
        self.stop_at = stop_at

    def _note(self, point: str, ctx: TrainContext) -> None:
        assert isinstance(ctx, TrainContext)
        self.contexts.add(id(ctx))
        self.calls.append((point, ctx.state.epoch, ctx.state.iter))

    def before_run(self, ctx):
        assert ctx.ema is None and ctx.restored.kind == "new" and not ctx.evaluates
        self._note("before_run", ctx)

    def before_epoch(self, ctx):
        self._note("before_epoch", ctx)

    def after_iter(self, ctx):
        self._note("after_iter", ctx)
        if ctx.state.iter == self.stop_at:
            ctx.state.stop_reason = f"stopped by a hook at {ctx.state.iter}"

    def after_epoch(self, ctx):
        self._note("after_epoch", ctx)

    def after_run(self, ctx):
        self._note("after_run", ctx)


def test_an_iteration_based_run_ends_inside_its_second_epoch(tiny_config, tmp_path):
    hook = Recorder()
    loaded = tiny_config('runner={type="IterBasedRunner", max_iters=8}', "data.val=false",
                         "checkpoint_config.interval=100")
    result = train_detector(loaded, work_dir=tmp_path, device="cpu", callbacks=[hook])
    iters = [("after_iter", i // 7, i) for i in range(1, 9)]  # epoch 1 done after iteration 6
    assert hook.calls == [("before_run", 0, 0), ("before_epoch", 0, 0), *iters[:6],
                          ("after_epoch", 1, 6), ("before_epoch", 1, 6), *iters[6:],
                          ("after_run", 1, 8)]
    assert len(hook.contexts) == 1  # one context for the whole run
    assert (result.epoch, result.iter, result.stop_reason) == (1, 8, "finished")
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == ["iter_8.pth"]


def test_a_hook_ends_an_epoch_based_run_through_the_context(tiny_config, tmp_path):
    hook = Recorder(stop_at=3)
    loaded = tiny_config("runner.max_epochs=2", "data.val=false")
    result = train_detector(loaded, work_dir=tmp_path, device="cpu", callbacks=[hook])
    assert hook.calls == [("before_run", 0, 0), ("before_epoch", 0, 0),
                          *[("after_iter", 0, i) for i in (1, 2, 3)], ("after_run", 0, 3)]
    assert (result.epoch, result.iter) == (0, 3)  # the epoch was not finished: no after_epoch
    assert result.stop_reason == "stopped by a hook at 3"
    meta = read_checkpoint(tmp_path / "latest.pth")["meta"]  # the run's end is saved
    assert (meta["epoch"], meta["iter"]) == (0, 3)
