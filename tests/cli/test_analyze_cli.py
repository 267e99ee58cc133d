"""`det analyze anchors` through typer's CliRunner: tables, --json, --out, --optimize, exit codes
and the anchor-free message. Datasets and answers: tests/analysis/anchor_data.py."""

from __future__ import annotations

import json
import re

import pytest
import typer
from typer.testing import CliRunner

from detcli.cli import analyze
from tests.analysis.anchor_data import BAD_ANCHORS, hand_config, synth_config
from tests.analysis.fake_heads import point_head, point_head_config  # noqa: F401  (fixture)


root = typer.Typer()  # wired as detcli/cli/main.py does, without the other groups
root.add_typer(analyze.app, name="analyze")


def run(*args):
    return CliRunner().invoke(root, ["analyze", "anchors", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    return hand_config(tmp_path_factory.mktemp("hand"))


def test_tables_and_zero_positive_list_as_plain_text(hand):
    result = run(hand)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "zero-positive share: 16.7% (1 of 6 GT boxes get no positive anchor" in out
    assert "b.jpg  box [26.0, 0.0, 40.0, 12.0]  14x12 px (input 28x24)  square  best IoU 0.359" in out
    # q05 interpolates 0.2571 + 0.25 * (0.3590 - 0.2571); q05 of the small ones: 0.15 of the way
    assert re.search(r"^small\s+4\s+0\.359\s+0\.272\s+0\.0%", out, re.M)
    assert re.search(r"^all\s+6\s+0\.367\s+0\.283\s+33\.3%\s+0\.8\s+1\s+16\.7%\s+50\.0%\s+-$", out, re.M)
    assert re.search(r"^level 0 \(stride 32\)\s+6\s.*11\.1%$", out, re.M)  # 2 of 18 anchors ignored
    assert "sizes from data.val.pipeline (img_scale [96, 64], pad size_divisor 32)" in out
    assert not set("┃━┏│") & set(out)  # piped: plain text, no box drawing


def test_json_and_out_write_the_same_report(hand, tmp_path):
    result = run(hand, "--json", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["zero_positive_share"] == 0.1667 and data["split"] == "val"
    assert json.loads((tmp_path / "out" / "report.json").read_text()) == data
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "best_iou.png", "gt_shapes.png", "report.json"]


def test_optimize_fixes_bad_anchors_and_its_set_lines_work(tmp_path):
    config = synth_config(tmp_path)
    result = run(config, "--set", BAD_ANCHORS, "--optimize", "--max-evals", 40)
    assert result.exit_code == 0, result.output
    assert "paste into the config:" in result.stdout
    assert "[model.bbox_head.anchor_generator]" in result.stdout
    assert re.search(r"^zero-positive share\s+\d+\.\d%\s+0\.0%$", result.stdout, re.M)
    sets = re.findall(r"--set '([^']+)'", result.stdout)
    assert [s.split("=")[0] for s in sets] == ["model.bbox_head.anchor_generator.ratios",
                                               "model.bbox_head.anchor_generator.octave_base_scale"]
    pasted = run(config, "--set", BAD_ANCHORS, *[a for s in sets for a in ("--set", s)], "--json")
    assert pasted.exit_code == 0, pasted.output
    assert json.loads(pasted.stdout)["zero_positive_share"] == 0.0


def test_optimize_json_has_the_after_report(tmp_path):
    config = synth_config(tmp_path)
    result = run(config, "--set", BAD_ANCHORS, "--optimize", "--max-evals", 8,
                 "--objective", "mean-iou", "--json", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)["optimize"]
    assert found["objective"] == "mean-iou" and found["evaluations"] <= 8
    assert found["after_report"]["overall"]["best_iou"]["mean"] >= found["before"]["score"][0] - 1e-4
    assert (tmp_path / "o" / "gt_shapes_optimized.png").is_file()


def test_anchor_free_head_says_it_does_not_apply(point_head, tmp_path):
    result = run(point_head_config(tmp_path))
    assert result.exit_code == 2
    assert "model.bbox_head (PointHead) has no anchor_generator: anchor analysis does not apply" \
        in result.output
    assert "hint: heads with anchors: ATSSHead, RetinaHead; with points: FCOSHead" in result.output


def test_exit_codes(hand, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset's data.train (data/synth/...) does not exist here
    assert run(hand, "--split", "train").exit_code == 3
    bad_set = run(hand, "--set", "model.train_cfg.assigner.pos_iou_thr=2")
    assert bad_set.exit_code == 2 and "pos_iou_thr" in bad_set.output
    assert run(hand, "--max-images", 0).exit_code == 2  # usage error
    assert run(hand, "--max-images", 1).exit_code == 0


def test_wired_into_det():
    from detcli.cli.main import app as det

    result = CliRunner().invoke(det, ["analyze", "--help"])
    assert result.exit_code == 0 and "anchors" in result.stdout
