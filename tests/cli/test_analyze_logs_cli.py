"""`det analyze logs` through typer's CliRunner on the hand-written runs of
tests/analysis/train_log_data.py: the table, --json, --out, --keys and the exit codes."""

from __future__ import annotations

import json
import re

import cv2
import typer
from typer.testing import CliRunner

from detcli.cli import analyze
from tests.analysis.train_log_data import RUN_A, RUN_B, write_run

root = typer.Typer()  # wired as detcli/cli/main.py does, without the other groups
root.add_typer(analyze.app, name="analyze")


def run(*args):
    return CliRunner().invoke(root, ["analyze", "logs", *[str(a) for a in args]])


def test_the_table_has_best_final_epochs_and_time(tmp_path):
    a, b = write_run(tmp_path / "a", RUN_A), write_run(tmp_path / "b", RUN_B)
    result = run(a, b)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert re.search(r"^a\s+bbox_mAP\s+0\.3000 \(epoch 2\)\s+0\.2500 \(epoch 3\)\s+3/3\s+12/12\s+"
                     r"3\.5 s\s+0\.292\s+0\.7000$", out, re.M)
    assert re.search(r"^b\s+bbox_mAP\s+0\.4000 \(epoch 2\)\s+0\.4000 \(epoch 2\)\s+2/3\s+8/12\s+"
                     r"2\.0 s\s+0\.250\s+1\.2000$", out, re.M)
    assert "add --out PNG to draw loss, bbox_mAP" in result.output


def test_json_and_the_chart(tmp_path):
    a, b = write_run(tmp_path / "a", RUN_A), write_run(tmp_path / "b", RUN_B)
    png = tmp_path / "charts" / "cmp.png"
    result = run(a, b, "--keys", "loss_cls,bbox_mAP", "-k", "lr", "--x", "iter", "--out", png,
                 "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["keys"] == ["loss_cls", "bbox_mAP", "lr"] and data["x"] == "iter"
    assert data["chart"] == str(png) and cv2.imread(str(png)) is not None
    first = data["runs"][0]
    assert (first["name"], first["best"]["value"], first["final"]["epoch"]) == ("a", 0.3, 3)
    assert (first["iters_done"], first["train_seconds"]) == (12, 3.5)
    assert data["runs"][1]["epochs_done"] == 2.0


def test_a_folder_without_a_log_exits_3_naming_it(tmp_path):
    (tmp_path / "not_a_run").mkdir()
    result = run(tmp_path / "not_a_run")
    assert result.exit_code == 3
    assert "not_a_run holds no metrics.jsonl, the log det train writes" in result.output
    assert "Traceback" not in result.output


def test_an_unknown_key_exits_2_listing_the_keys(tmp_path):
    result = run(write_run(tmp_path / "a", RUN_A), "--keys", "loss_rpn")
    assert result.exit_code == 2
    assert "--keys loss_rpn: not logged by a" in result.output
    assert "loss_cls" in result.output


def test_a_cut_short_last_line_is_read_with_a_warning(tmp_path):
    work = write_run(tmp_path / "crashed", RUN_B, tail='{"mode": "train", "ep')
    result = run(work, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["runs"][0]["dropped_last_line"] is True
    assert "line 7 is cut short" in result.output
