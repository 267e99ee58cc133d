"""DETR through `det analyze anchors`: a query-based detector has no priors to analyse, and the
report gives the GT against its queries and the input instead (hand-computed on the two-image
set of tests/analysis/tiny_data.py)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from detcli.cli import analyze
from tests.analysis.tiny_data import make_tiny, with_preset

app = typer.Typer()
app.add_typer(analyze.app, name="analyze")


@pytest.fixture
def detr_tiny(tmp_path):
    return with_preset(make_tiny(tmp_path), "detr_tiny_synth").config


def run(*args):
    return CliRunner().invoke(app, ["analyze", "anchors", *(str(a) for a in args)])


def test_analyze_anchors_says_a_query_based_detector_has_no_priors(detr_tiny):
    result = run(detr_tiny)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert ("model (DETR) is a query-based detector: it has no priors (anchors or points) to "
            "analyse.") in text
    assert ("Training matches its 20 queries (model.num_queries) to each image's GT one to "
            "one, at least total cost (ClassificationCost(1.0), BBoxL1Cost(5.0), "
            "IoUCost(2.0))") in text
    assert "3 GT boxes in 2 of 2 images; input scale 256x256 (w x h)" in text
    assert "every image has at most 20 GT boxes: each can be matched" in text


def test_the_report_gives_gt_per_image_and_sizes_against_the_input(detr_tiny):
    result = run(detr_tiny, "--set", "model.num_queries=1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["detector"], data["priors"], data["num_queries"]) == ("DETR", None, 1)
    assert data["input_scale"] == [256, 256]
    # a.png: a square and a circle (the crowd box is an ignore region), b.png: a triangle
    assert (data["gt_per_image"]["max"], data["gt_per_image"]["mean"]) == (2, 1.5)
    assert (data["images_over_queries"], data["gt_unmatchable"]) == (1, 1)
    assert data["over_queries"] == [{"file": "a.png", "num_gt": 2}]
    # network input: a.png x2 (256 x 192): 60 x 60 and 80 x 140; b.png x2.56 (256 x 128):
    # 51.2 x 51.2. sides sqrt(w h): 60, 105.83, 51.2; over sqrt(192 * 256) = 221.70 and
    # sqrt(128 * 256) = 181.02: 0.2706, 0.4774, 0.2828
    assert (data["gt_side_px"]["min"], data["gt_side_px"]["max"]) == (51.2, 105.83)
    assert data["gt_side_px"]["median"] == 60.0
    assert data["gt_side_of_image"]["min"] == pytest.approx(60 / 221.7025, abs=1e-4)
    assert data["gt_side_of_image"]["max"] == pytest.approx(105.830 / 221.7025, abs=1e-4)
    assert data["gt_side_of_image"]["median"] == pytest.approx(51.2 / 181.0193, abs=1e-4)
    assert data["size_buckets"] == {"small": 0, "medium": 2, "large": 1}


def test_too_few_queries_are_flagged_and_optimize_is_refused(detr_tiny):
    result = run(detr_tiny, "--set", "model.num_queries=1")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert ("1 image with more GT boxes than the 1 queries, 1 GT box never matched: a.png (2); "
            "raise model.num_queries") in text
    result = run(detr_tiny, "--optimize")
    assert result.exit_code == 2, result.output
    assert "is a query-based detector with no anchors to optimise" in " ".join(result.output.split())
