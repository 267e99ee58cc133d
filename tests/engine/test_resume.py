"""Resume, extend and init-from: what each restores, and a resumed run equal to an unbroken one."""

from __future__ import annotations

import pytest
import torch

from detcli.engine.checkpoint import read_checkpoint, save_checkpoint
from detcli.engine.hooks import Hook
from detcli.engine.trainer import train_detector
from detcli.errors import CheckpointError, ConfigError
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
                                                                                 tmp_path):
    three = build_detector(tiny_config().cfg.model)  # 3 classes, 9 anchors
    save_checkpoint(tmp_path / "three.pth", three, meta={"classes": ["square", "circle", "triangle"]})
    two = tiny_config("model.bbox_head.num_classes=2", 'data.train.classes=["square", "circle"]',
                      'data.val.classes=["square", "circle"]', "runner.max_epochs=1")
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
    assert any("trained on classes ['square', 'circle', 'triangle']" in line for line in lines)
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
