"""curves.png and the TensorBoard logger on one short run of the tiny RetinaNet (2 epochs of
6 iterations, an evaluation after each), plus the parts that need no training: drawing only
on rank 0 and only when the log grew, the switch, and the missing tensorboard extra."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from detcli.analysis.train_logs import read_run
from detcli.config.loader import load_config
from detcli.engine.build import build_hooks
from detcli.engine.context import LOWEST, Hook, HookList
from detcli.engine.distributed import DistInfo
from detcli.engine.hooks import CurvesHook, TensorboardLoggerHook
from detcli.engine.state import EpochBased, TrainState
from detcli.engine.trainer import train_detector
from detcli.errors import ConfigError
from detcli.viz.curves import plot_run
from tests.analysis.train_log_data import RUN_A, write_run

TENSORBOARD = ('log_config.hooks=[{type = "TextLoggerHook"}, '
               '{type = "TensorboardLoggerHook"}]')


class CurvesSeen(Hook):
    """Records curves.png's modification time after each evaluation and at the end (runs
    after CurvesHook: same priority, added later)."""

    priority = LOWEST

    def __init__(self) -> None:
        self.after_eval: list[int] = []
        self.at_end: int | None = None

    def on_eval(self, ctx, metrics):
        self.after_eval.append((ctx.work_dir / "curves.png").stat().st_mtime_ns)

    def after_run(self, ctx):
        self.at_end = (ctx.work_dir / "curves.png").stat().st_mtime_ns


@pytest.fixture(scope="module")
def run(tiny_config_path, tmp_path_factory):
    """(result, work dir, CurvesSeen) of the module's one training run, on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work = tmp_path_factory.mktemp("curves-run") / "tiny_run"
        seen = CurvesSeen()
        loaded = load_config(tiny_config_path, [TENSORBOARD, "log_config.interval=2",
                                                "log_config.curves=true"])
        result = train_detector(loaded, work_dir=work, device="cpu", callbacks=[seen])
    finally:
        torch.set_num_threads(threads)
    return result, work, seen


def test_curves_png_is_drawn_at_each_evaluation_and_not_again_at_the_end(run):
    result, work, seen = run
    assert (work / "curves.png").is_file()
    assert len(seen.after_eval) == 2 and seen.after_eval[0] < seen.after_eval[1]
    assert seen.at_end == seen.after_eval[1]  # nothing was logged after the last evaluation


def test_the_curves_plot_what_the_run_logged(run):
    result, work, _ = run
    history = read_run(work)
    train = [r for r in result.history if r["mode"] == "train"]
    evals = [r for r in result.history if r["mode"] == "val"]
    fig = plot_run(history)
    by_title = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert list(by_title) == ["losses", "learning rate", "gradient norm (before clipping)",
                              "validation"]
    loss = {line.get_label(): line for line in by_title["losses"].lines}
    assert list(loss) == ["loss_cls", "loss_bbox", "loss"]
    ipe = train[0]["iters_per_epoch"]
    assert list(loss["loss"].get_xdata()) == [r["iter"] / ipe for r in train]
    assert list(loss["loss"].get_ydata()) == pytest.approx([r["loss"] for r in train], rel=1e-5)
    mAP = by_title["validation"].lines[0]
    assert list(mAP.get_xdata()) == [1.0, 2.0]
    assert list(mAP.get_ydata()) == pytest.approx([r["bbox_mAP"] for r in evals], rel=1e-5)
    assert history.summary().iters_done == result.iter == 2 * ipe


def test_tensorboard_scalars_equal_the_logged_values(run):
    result, work, _ = run
    (event_file,) = (work / "tf_logs").glob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_cls", "train/lr", "train/grad_norm", "val/bbox_mAP",
            "val/bbox_mAP_50"} <= tags
    assert not {"train/iter", "train/epoch", "val/iter"} & tags
    for mode, key in [("train", "loss"), ("train", "loss_bbox"), ("train", "lr"),
                      ("val", "bbox_mAP"), ("val", "bbox_mAP_75")]:
        logged = [(r["iter"], r[key]) for r in result.history if r["mode"] == mode]
        written = [(e.step, e.value) for e in events.Scalars(f"{mode}/{key}")]
        assert [s for s, _ in written] == [i for i, _ in logged]
        assert [v for _, v in written] == pytest.approx([v for _, v in logged], rel=1e-6)


def fake_context(work, rank: int = 0):
    return SimpleNamespace(dist=DistInfo(rank=rank, world_size=2), work_dir=work,
                           hooks=HookList(), state=TrainState(rule=EpochBased(3),
                                                              iters_per_epoch=4))


def test_only_rank_0_draws_and_only_when_the_log_grew(tmp_path):
    work = write_run(tmp_path / "run", RUN_A[:3])
    hook = CurvesHook(work / "metrics.jsonl", work / "curves.png")
    hook.draw(fake_context(work, rank=1))
    assert not (work / "curves.png").exists()
    hook.draw(fake_context(work))
    first = (work / "curves.png").stat().st_mtime_ns
    hook.draw(fake_context(work))
    assert (work / "curves.png").stat().st_mtime_ns == first  # same log: not redrawn
    write_run(work, RUN_A)
    hook.draw(fake_context(work))
    assert (work / "curves.png").stat().st_mtime_ns > first


def test_log_config_curves_switches_the_hook(tiny_config, tmp_path):
    on = build_hooks(tiny_config("log_config.curves=true").cfg, tmp_path, evaluates=False)
    off = build_hooks(tiny_config("log_config.curves=false").cfg, tmp_path, evaluates=False)
    assert [h.out for h in on.find(CurvesHook)] == [tmp_path / "curves.png"]
    assert off.find(CurvesHook) == []
    assert load_config("retinanet_tiny_synth").cfg.log_config.curves  # on unless turned off


def test_without_tensorboard_the_hook_is_refused_before_training(tiny_config, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError, match="TensorboardLoggerHook needs the tensorboard package") \
            as info:
        train_detector(tiny_config(TENSORBOARD), work_dir=tmp_path / "w", device="cpu")
    assert "pip install 'detcli[tensorboard]'" in info.value.hint
    assert not list((tmp_path / "w").glob("*.pth"))  # nothing trained


def test_log_dir_relative_to_the_work_dir_or_absolute(tmp_path):
    assert TensorboardLoggerHook().path(tmp_path) == tmp_path / "tf_logs"
    assert TensorboardLoggerHook(log_dir=str(tmp_path / "tb")).path(tmp_path / "w") == \
        tmp_path / "tb"


def write_events(work, records, done: int = 0) -> None:
    """One TensorboardLoggerHook session on a fake context: started at iteration ``done``,
    given ``records``, closed."""
    hook = TensorboardLoggerHook()
    ctx = fake_context(work)
    ctx.state.iter = done
    hook.before_run(ctx)
    for record in records:
        hook.on_log(ctx, record)
    hook.after_run(ctx)


def scalar_steps(work, tag):
    events = EventAccumulator(str(work / "tf_logs"))  # the folder: every event file in it
    events.Reload()
    if tag not in events.Tags()["scalars"]:
        return []
    return [(e.step, round(e.value, 6)) for e in events.Scalars(tag)]


def test_the_event_folder_reads_as_one_run_across_a_resume_and_a_new_run(tmp_path):
    first = [r for r in RUN_A if r["iter"] <= 8]
    write_events(tmp_path, first)  # a run killed after iteration 8, its checkpoint at 4
    assert [s for s, _ in scalar_steps(tmp_path, "train/loss")] == [2, 4, 6, 8]
    redone = [{**r, "loss": r["loss"] + 1} if r["mode"] == "train" else r
              for r in RUN_A if r["iter"] > 4]
    write_events(tmp_path, redone, done=4)  # resumed from iteration 4: 6 and 8 again
    assert scalar_steps(tmp_path, "train/loss") == [(2, 1.5), (4, 1.2), (6, 2.0), (8, 1.9),
                                                    (10, 1.8), (12, 1.7)]
    assert scalar_steps(tmp_path, "val/bbox_mAP") == [(4, 0.1), (8, 0.3), (12, 0.25)]
    write_events(tmp_path, RUN_A[:1])  # a new run in the same folder
    assert scalar_steps(tmp_path, "train/loss") == [(2, 1.5)]
    assert scalar_steps(tmp_path, "val/bbox_mAP") == []
