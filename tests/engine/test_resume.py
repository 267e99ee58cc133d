"""Resume, extend and init-from: what each restores, and a resumed run equal to an unbroken one."""

from __future__ import annotations

import json
import os

import pytest
import torch

from detcli.engine.checkpoint import read_checkpoint, save_checkpoint
from detcli.engine.hooks import Hook
from detcli.engine.trainer import train_detector
from detcli.errors import CheckpointError, ConfigError, DataError
from detcli.models.build import build_detector

pytestmark = pytest.mark.usefixtures("one_thread")

EMA = 'custom_hooks=[{type="NumClassCheckHook"}, {type="EMAHook", momentum=0.01}]'
LOGGED = ("loss_cls", "loss_bbox", "loss", "grad_norm", "lr")


class Interrupt(Hook):
    """Kills the run (as Ctrl-C would) at ``point`` once ``when(state)`` holds, after every
    other hook there (the checkpoint is written)."""

    priority = 100

    def __init__(self, point: str, when) -> None:
        setattr(self, point, self._maybe_stop)
        self.when = when

    def _maybe_stop(self, trainer) -> None:
        if self.when(trainer.state):
            raise KeyboardInterrupt


def logged(result, after_iter: int = 0):
    """(iter, values) of every train and val record after iteration ``after_iter``."""
    train = [(r["iter"], [r[k] for k in LOGGED]) for r in result.history
             if r["mode"] == "train" and r["iter"] > after_iter]
    val = [(r["iter"], r["bbox_mAP"], r["bbox_AR@100"]) for r in result.history
           if r["mode"] == "val" and r["iter"] > after_iter]
    return train, val


def assert_same_weights(path_a, path_b):
    a, b = read_checkpoint(path_a), read_checkpoint(path_b)
    for part in ("state_dict",):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    ea, eb = a["ema"]["train_state_dict"], b["ema"]["train_state_dict"]
    assert all(torch.equal(ea[k], eb[k]) for k in ea)


def test_an_interrupted_run_resumed_equals_an_uninterrupted_one(tiny_config, tmp_path):
    """Epoch-based, with EMA, evaluation and random flips: bit-for-bit equal on CPU."""
    loaded = tiny_config("runner.max_epochs=2", EMA)
    straight = train_detector(loaded, work_dir=tmp_path / "a", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train_detector(loaded, work_dir=tmp_path / "b", device="cpu",
                       callbacks=[Interrupt("after_epoch", lambda s: s.epoch == 1)])
    resumed = train_detector(loaded, work_dir=tmp_path / "b", device="cpu", resume="auto")

    ipe = straight.iter // 2
    assert resumed.restored.kind == "resume"
    assert resumed.restored.path == str(tmp_path / "b" / "latest.pth")
    restored = "\n".join(resumed.restored.lines())
    for item in ("model weights", "optimizer (AdamW", "lr schedule (step", "EMA weights",
                 f"epoch 1, iteration {ipe}", "random generators", "data position (epoch 2 "
                 "from its start)", "written before its evaluation: evaluating first"):
        assert item in restored
    # epoch 1's checkpoint was written before its evaluation: the resumed run redoes it first
    (train, val), (straight_train, _) = logged(resumed), logged(straight, after_iter=ipe)
    assert train == straight_train
    assert val == logged(straight, after_iter=ipe - 1)[1]  # the evaluations at ipe and 2 ipe
    assert train[0][0] == ipe + 1  # it went on with the next iteration
    assert {**resumed.best, "path": None} == {**straight.best, "path": None}
    assert_same_weights(tmp_path / "a" / "epoch_2.pth", tmp_path / "b" / "epoch_2.pth")
    final = read_checkpoint(tmp_path / "a" / "epoch_2.pth")["meta"]  # written again at the end
    assert final["evaluation_pending"] is False and final["best"] == straight.best


def test_an_iteration_based_run_resumes_inside_an_epoch(tiny_config, tmp_path):
    loaded = tiny_config('runner={type="IterBasedRunner", max_iters=9}', "data.val=false",
                         "checkpoint_config.interval=4", EMA)
    straight = train_detector(loaded, work_dir=tmp_path / "a", device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train_detector(loaded, work_dir=tmp_path / "b", device="cpu",
                       callbacks=[Interrupt("after_iter", lambda s: s.iter == 5)])
    resumed = train_detector(loaded, work_dir=tmp_path / "b", device="cpu", resume="auto")
    assert "epoch 0, iteration 4" in "\n".join(resumed.restored.lines())  # 6 per epoch
    assert logged(resumed) == logged(straight, after_iter=4)
    assert_same_weights(tmp_path / "a" / "iter_9.pth", tmp_path / "b" / "iter_9.pth")


def test_extending_a_finished_run_and_a_run_already_finished(tiny_config, tmp_path):
    one = train_detector(tiny_config("runner.max_epochs=1", "data.val=false"), work_dir=tmp_path,
                         device="cpu")
    assert one.epoch == 1
    longer = tiny_config("runner.max_epochs=2", "data.val=false", f"load_from={str(tmp_path / 'x')!r}")
    extended = train_detector(longer, work_dir=tmp_path, device="cpu", resume="auto")
    assert extended.restored.kind == "extend" and extended.epoch == 2
    lines = extended.restored.lines()
    assert lines[0] == f"extending the finished run of {tmp_path / 'latest.pth'}"
    assert "  note: the checkpoint finished its schedule of 1 epochs; continuing to 2" in lines
    assert any("load_from" in line and "is not used" in line for line in lines)
    again = train_detector(longer, work_dir=tmp_path, device="cpu", resume="auto")
    assert again.stop_reason == "already finished" and again.restored.already_finished
    assert again.history == [] and again.epoch == 2
    assert ("  note: the run already finished: 2 of 2 epochs trained; to train longer, raise "
            "runner.max_epochs above 2 (--set runner.max_epochs=N)") in again.restored.lines()


def test_init_from_a_checkpoint_with_other_classes_lists_the_mismatch_and_trains(tiny_config,
                                                                                 tmp_path, caplog):
    three = build_detector(tiny_config().cfg.model)  # 3 classes, 9 anchors
    save_checkpoint(tmp_path / "three.pth", three, meta={"classes": ["square", "circle", "triangle"]})
    two = tiny_config("model.bbox_head.num_classes=2", 'data.train.classes=["square", "circle"]',
                      'data.val.classes=["square", "circle"]', "runner.max_epochs=1")
    with caplog.at_level("INFO", logger="detcli"):
        result = train_detector(two, work_dir=tmp_path / "run", device="cpu",
                                init_from=str(tmp_path / "three.pth"))
    report = result.restored
    assert report.kind == "init_from"
    assert report.load.mismatched == [("bbox_head.retina_cls.weight", (27, 32, 3, 3), (18, 32, 3, 3)),
                                      ("bbox_head.retina_cls.bias", (27,), (18,))]
    assert report.load.missing == [] and report.load.unexpected == []
    lines = report.lines()
    assert "  skipped bbox_head.retina_cls.weight: shape [27, 32, 3, 3] in the checkpoint, " \
           "[18, 32, 3, 3] in the model" in lines
    classes = next(i for i, line in enumerate(lines)
                   if "trained on 3 classes (square, circle, triangle); this run has 2 "
                      "(square, circle)" in line)
    assert classes < lines.index("  skipped bbox_head.retina_cls.bias: shape [27] in the "
                                 "checkpoint, [18] in the model")  # the reason comes first
    logged = [r.getMessage() for r in caplog.records]
    assert sum("skipped bbox_head.retina_cls.weight" in m for m in logged) == 1  # said once
    assert result.stop_reason == "finished" and result.epoch == 1
    assert result.metrics is not None and len(result.metrics["per_class"]) == 2


def test_resume_mistakes_are_clear(tiny_config, tmp_path):
    fresh = train_detector(tiny_config("runner.max_epochs=1", "data.val=false"),
                           work_dir=tmp_path / "new", device="cpu", resume="auto")
    assert fresh.restored.notes[0] == (f"nothing to resume in {tmp_path / 'new'} (no checkpoint): "
                                       "starting a new run")
    torch.save(read_checkpoint(tmp_path / "new" / "latest.pth")["state_dict"], tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="w.pth holds weights only") as info:
        train_detector(tiny_config(), work_dir=tmp_path / "x", device="cpu",
                       resume=str(tmp_path / "w.pth"))
    assert "--init-from" in info.value.hint
    with pytest.raises(ConfigError, match="--resume and --init-from cannot be combined"):
        train_detector(tiny_config(), work_dir=tmp_path / "x", device="cpu", resume="auto",
                       init_from=str(tmp_path / "w.pth"))
    # exit code 4 (the checkpoint's), not 1: a checkpoint that does not fit is a checkpoint error
    with pytest.raises(CheckpointError, match="does not fit the model, so it cannot be resumed"):
        train_detector(tiny_config("model.bbox_head.feat_channels=16"), work_dir=tmp_path / "y",
                       device="cpu", resume=str(tmp_path / "new" / "latest.pth"))


# -- a run that stopped never silently restarts ---------------------------------------------------


@pytest.fixture
def two_epochs(tiny_config, tmp_path_factory):
    """(config, work dir) of a finished 2-epoch run without evaluation, made once per test."""
    loaded = tiny_config("runner.max_epochs=2", "data.val=false")
    work = tmp_path_factory.mktemp("two-epochs")
    train_detector(loaded, work_dir=work, device="cpu")
    return loaded, work


def snapshot(work_dir):
    return {p.name: p.read_bytes() for p in work_dir.iterdir()
            if p.is_file() and p.name != "train.log"}


def test_resume_auto_without_a_usable_latest_takes_the_newest_checkpoint_that_loads(two_epochs):
    loaded, work = two_epochs
    before = snapshot(work)
    (work / "latest.pth").unlink()  # missing
    result = train_detector(loaded, work_dir=work, device="cpu", resume="auto")
    assert result.restored.path == str(work / "epoch_2.pth")
    assert result.stop_reason == "already finished"
    assert ("  note: resuming from epoch_2.pth, the newest checkpoint that loads (latest.pth is "
            "missing)") in result.restored.lines()
    assert snapshot(work) == {k: v for k, v in before.items() if k != "latest.pth"}  # untouched

    os.symlink("epoch_9.pth", work / "latest.pth")  # dangling
    result = train_detector(loaded, work_dir=work, device="cpu", resume="auto")
    assert result.restored.path == str(work / "epoch_2.pth")
    assert any("latest.pth skipped: it links to epoch_9.pth, which does not exist" in line
               for line in result.restored.lines())

    # latest.pth -> epoch_2.pth, cut short by a full disk: epoch 2 is trained again from epoch_1
    (work / "latest.pth").unlink()
    os.symlink("epoch_2.pth", work / "latest.pth")
    (work / "epoch_2.pth").write_bytes(before["epoch_2.pth"][:1000])
    result = train_detector(loaded, work_dir=work, device="cpu", resume="auto")
    assert result.restored.path == str(work / "epoch_1.pth")
    note = next(line for line in result.restored.lines() if "the newest checkpoint that loads" in line)
    assert "latest.pth skipped: checkpoint" in note and "epoch_2.pth skipped: checkpoint" in note
    assert "cannot be read" in note
    assert result.stop_reason == "finished" and result.epoch == 2
    assert (work / "epoch_1.pth").read_bytes() == before["epoch_1.pth"]
    assert [r["iter"] for r in map(json.loads, (work / "metrics.jsonl").read_text().splitlines())
            ] == list(range(1, 13))  # epoch 1's records kept, epoch 2's redone once

    for name in ("epoch_1.pth", "epoch_2.pth"):
        (work / name).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be resumed") as info:
        train_detector(loaded, work_dir=work, device="cpu", resume="auto")
    assert "epoch_1.pth skipped" in str(info.value) and "--work-dir" in info.value.hint


def test_a_new_run_refuses_a_work_dir_with_checkpoints(two_epochs, tmp_path):
    loaded, work = two_epochs
    before = snapshot(work)
    for start in ({}, {"init_from": str(work / "epoch_1.pth")}):
        with pytest.raises(ConfigError, match="already holds checkpoints .*epoch_1.pth, "
                                              "epoch_2.pth, latest.pth.*would overwrite") as info:
            train_detector(loaded, work_dir=work, device="cpu", **start)
        assert "--resume auto" in info.value.hint and "--work-dir" in info.value.hint
    assert snapshot(work) == before  # config.toml and metrics.jsonl too

    from typer.testing import CliRunner

    from detcli.cli.main import app

    cli = CliRunner().invoke(app, ["train", str(loaded.source), "--work-dir", str(work),
                                   "--device", "cpu", "--set", "runner.max_epochs=2"])
    assert cli.exit_code == 2 and "would overwrite them" in cli.output
    assert "Traceback" not in cli.output
    # a work dir with logs but no checkpoint (a run killed in its first epoch) starts again
    (tmp_path / "metrics.jsonl").write_text('{"mode": "train", "iter": 1}\n')
    fresh = train_detector(tiny_config_one_epoch(loaded), work_dir=tmp_path, device="cpu")
    assert fresh.restored.kind == "new" and fresh.epoch == 1


def tiny_config_one_epoch(loaded):
    from detcli.config.loader import load_config

    return load_config(loaded.source, [*loaded.overrides, "runner.max_epochs=1"])


def test_leftover_tmp_files_of_a_killed_save_are_removed_at_the_next_start(two_epochs, caplog):
    loaded, work = two_epochs
    (work / "epoch_3.pth.tmp").write_bytes(b"half a checkpoint")
    (work / ".latest.pth.tmp").symlink_to("epoch_3.pth.tmp")
    (work / "notes.tmp").write_text("not ours")
    with caplog.at_level("WARNING", logger="detcli"):
        train_detector(loaded, work_dir=work, device="cpu", resume="auto")
    assert not (work / "epoch_3.pth.tmp").exists() and not os.path.lexists(work / ".latest.pth.tmp")
    assert (work / "notes.tmp").exists()
    assert sum("epoch_3.pth.tmp: a checkpoint write that never finished" in r.getMessage()
               for r in caplog.records) == 1


def test_the_epoch_checkpoint_is_written_before_its_evaluation_can_fail(tiny_config, tmp_path,
                                                                        monkeypatch):
    import detcli.engine.evaluation as evaluation

    loaded = tiny_config("runner.max_epochs=1")
    evaluate = evaluation.evaluate

    def broken(*args, **kwargs):
        raise DataError("val image broken.jpg cannot be decoded")

    monkeypatch.setattr(evaluation, "evaluate", broken)
    with pytest.raises(DataError, match="broken.jpg"):
        train_detector(loaded, work_dir=tmp_path, device="cpu")
    ckpt = read_checkpoint(tmp_path / "latest.pth")  # the trained epoch is kept
    assert ckpt["meta"]["epoch"] == 1 and ckpt["meta"]["evaluation_pending"] is True
    assert not (tmp_path / "best_bbox_mAP.pth").exists()

    monkeypatch.setattr(evaluation, "evaluate", evaluate)  # the val set is fixed
    result = train_detector(loaded, work_dir=tmp_path, device="cpu", resume="auto")
    assert result.stop_reason == "already finished" and result.metrics is not None
    assert result.best["epoch"] == 1 and (tmp_path / "best_bbox_mAP.pth").exists()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["mode"], r["iter"]) for r in records] == [("train", i) for i in range(1, 7)] + [
        ("val", 6)]
    assert read_checkpoint(tmp_path / "epoch_1.pth")["meta"]["evaluation_pending"] is False


def test_init_from_a_checkpoint_that_matches_nothing_is_an_error(tiny_config, tmp_path):
    model = build_detector(tiny_config().cfg.model)
    torch.save({"state_dict": {f"detector.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match="none of its 144 tensors fits the model") as info:
        train_detector(tiny_config(), work_dir=tmp_path / "run", device="cpu",
                       init_from=str(tmp_path / "renamed.pth"))
    message = str(info.value)
    assert "Its keys start with detector (144); the model's with backbone (" in message
    assert "neck (" in message and "bbox_head (" in message
    assert not (tmp_path / "run" / "epoch_1.pth").exists()
