"""DETR through the analysis commands: a query-based detector has no priors to analyse."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from detcli.cli import analyze

app = typer.Typer()
app.add_typer(analyze.app, name="analyze")


def test_analyze_anchors_says_a_query_based_detector_has_no_priors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # decided from the config: no dataset is read
    result = CliRunner().invoke(app, ["analyze", "anchors", "detr_tiny_synth"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert ("model (DETR) is a query-based detector: it has no priors (anchors or points) to "
            "analyse") in text
    assert "matches its 20 learned queries (model.num_queries) to the GT one to one" in text
    assert ("model.train_cfg.assigner: ClassificationCost(1.0), BBoxL1Cost(5.0), "
            "IoUCost(2.0)") in text
