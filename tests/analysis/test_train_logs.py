"""Reading a run's metrics.jsonl back: series, the best/final metric, training time, runs
compared, and the files that cannot be read (tests/analysis/train_log_data.py's numbers)."""

from __future__ import annotations

import logging

import pytest

from detcli.analysis.train_logs import (
    AUTO_METRIC,
    RunSettings,
    compare_runs,
    read_run,
    read_runs,
    run_settings,
)
from detcli.errors import ConfigError, DataError
from tests.analysis.train_log_data import RUN_A, RUN_B, write_run


def test_series_of_a_train_key_and_an_evaluation_key(tmp_path):
    run = read_run(write_run(tmp_path / "a", RUN_A))
    loss = run.series("loss_cls")
    assert loss.mode == "train"
    assert loss.iters == (2, 4, 6, 8, 10, 12)
    assert loss.values == (1.0, 0.8, 0.6, 0.5, 0.5, 0.4)
    assert loss.x("epoch", run.iters_per_epoch) == (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    mAP = run.series("bbox_mAP")
    assert (mAP.mode, mAP.iters, mAP.values) == ("val", (4, 8, 12), (0.1, 0.3, 0.25))
    assert mAP.x("epoch", 4) == (1.0, 2.0, 3.0) and mAP.x("iter", 4) == (4.0, 8.0, 12.0)
    assert run.series("not_logged").values == ()


def test_keys_losses_and_metric_keys(tmp_path):
    run = read_run(write_run(tmp_path / "a", RUN_A))
    assert run.loss_keys() == ["loss_cls", "loss_bbox", "loss"]
    assert run.metric_keys() == ["bbox_mAP", "bbox_mAP_50", "bbox_mAP_75"]
    assert "iters_per_epoch" not in run.keys("train") and "iter" not in run.keys("val")
    assert (run.iters_per_epoch, run.max_iters, run.default_x()) == (4, 12, "epoch")


def test_summary_best_final_epochs_and_time(tmp_path):
    summary = read_run(write_run(tmp_path / "a", RUN_A)).summary()
    assert summary.name == "a" and summary.metric == "bbox_mAP" and summary.greater
    assert (summary.best.value, summary.best.epoch, summary.best.iter) == (0.3, 2, 8)
    assert (summary.final.value, summary.final.epoch) == (0.25, 3)
    assert summary.evaluations == 3
    assert (summary.iters_done, summary.epochs_done, summary.max_epochs) == (12, 3.0, 3.0)
    assert summary.train_seconds == pytest.approx(2 * 0.5 + 10 * 0.25)
    assert summary.seconds_per_iter == pytest.approx(3.5 / 12)
    assert summary.last_loss == 0.7
    assert summary.to_dict()["best"] == {"value": 0.3, "epoch": 2, "iter": 8}


def test_the_config_names_the_metric_and_its_rule(tmp_path):
    config = '[evaluation]\nsave_best = "bbox_mAP_50"\nrule = "less"  # odd, but said\n' \
             '[runner]\ntype = "IterBasedRunner"\n'
    run = read_run(write_run(tmp_path / "a", RUN_A, config=config))
    assert (run.metric, run.greater, run.by_epoch, run.default_x()) == \
        ("bbox_mAP_50", False, False, "iter")
    best = run.summary().best
    assert (best.value, best.epoch) == (0.4, 1)  # the smallest of 0.4, 0.6, 0.55
    assert run_settings(tmp_path / "none.toml") == RunSettings()
    auto = write_run(tmp_path / "b", RUN_A, config='[evaluation]\nsave_best = "auto"\n')
    assert read_run(auto).metric == AUTO_METRIC == "bbox_mAP"
    voc = write_run(tmp_path / "v", RUN_A, config='[evaluation]\nmetric = ["voc", "bbox"]\n')
    assert read_run(voc).metric == "voc_mAP"  # auto: the first metric's headline key
    loss_rule = write_run(tmp_path / "c", RUN_A, config='[evaluation]\nsave_best = "loss"\n')
    assert not read_run(loss_rule).greater  # a loss: less is better, as EvalHook decides


def test_a_cut_short_last_line_is_dropped_with_a_warning(tmp_path, caplog):
    path = write_run(tmp_path / "a", RUN_A, tail='{"mode": "train", "epoch": 4, "it')
    with caplog.at_level(logging.WARNING, logger="detcli.analysis.train_logs"):
        run = read_run(path)
    assert len(run.records) == len(RUN_A) and run.dropped_last_line
    assert "line 10 is cut short" in caplog.text
    assert run.summary().dropped_last_line


def test_a_bad_line_inside_the_file_names_file_and_line(tmp_path):
    path = write_run(tmp_path / "a", RUN_A[:2], tail='not json\n{"mode": "val", "iter": 4}\n')
    with pytest.raises(DataError, match=r"metrics.jsonl, line 3: not a JSON record"):
        read_run(path)
    write_run(tmp_path / "b", [], tail='{"mode": "train"}\n')
    with pytest.raises(DataError, match="line 1: not a det train record"):
        read_run(tmp_path / "b")


def test_a_folder_without_a_log_names_the_folder_and_the_file_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty holds no metrics.jsonl") as info:
        read_run(tmp_path / "empty")
    assert "work dir" in info.value.hint
    with pytest.raises(DataError, match="missing does not exist"):
        read_run(tmp_path / "missing")


def test_a_metrics_file_can_be_given_itself(tmp_path):
    work = write_run(tmp_path / "run1", RUN_B)
    run = read_run(work / "metrics.jsonl")
    assert run.name == "run1" and run.series("grad_norm").values == (5.0, 4.0, 3.0, 2.5)


def test_runs_with_the_same_folder_name_are_told_apart(tmp_path):
    a = write_run(tmp_path / "x" / "retinanet", RUN_A)
    b = write_run(tmp_path / "y" / "retinanet", RUN_B)
    c = write_run(tmp_path / "fcos", RUN_B)
    assert [r.name for r in read_runs([a, b, c])] == ["x/retinanet", "y/retinanet", "fcos"]


def test_comparison_defaults_to_loss_and_the_metric(tmp_path):
    runs = read_runs([write_run(tmp_path / "a", RUN_A), write_run(tmp_path / "b", RUN_B)])
    comparison = compare_runs(runs)
    assert comparison.keys == ("loss", "bbox_mAP") and comparison.x == "epoch"
    assert [r.name for r in comparison.runs] == ["a", "b"]
    b = comparison.runs[1]
    assert (b.best.value, b.final.value, b.epochs_done, b.max_epochs) == (0.4, 0.4, 2.0, 3.0)
    data = comparison.to_dict()
    assert data["keys"] == ["loss", "bbox_mAP"] and data["runs"][0]["train_seconds"] == 3.5


def test_comparison_of_an_unlogged_key_lists_the_keys_there_are(tmp_path):
    runs = read_runs([write_run(tmp_path / "a", RUN_A)])
    with pytest.raises(ConfigError, match=r"--keys loss_rpn_cls: not logged by a; the train "
                                          r"records hold .*loss_bbox.*; the evaluations "
                                          r"bbox_mAP, bbox_mAP_50"):
        compare_runs(runs, ["loss_rpn_cls"])
    assert compare_runs(runs, ["lr"], x="iter").keys == ("lr",)


def test_a_key_only_some_runs_logged_is_drawn_for_those_with_a_warning(tmp_path, caplog):
    runs = read_runs([write_run(tmp_path / "a", RUN_A), write_run(tmp_path / "b", RUN_B)])
    with caplog.at_level(logging.WARNING, logger="detcli.analysis.train_logs"):
        assert compare_runs(runs, ["grad_norm"]).keys == ("grad_norm",)
    assert "grad_norm: not logged by a" in caplog.text
