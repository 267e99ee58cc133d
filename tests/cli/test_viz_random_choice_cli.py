"""`det viz dataset` on DETR's training pipeline (RandomFlip, then RandomChoice of a multi-scale
resize or a resize, a crop and a multi-scale resize): both branches run through the viewer."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from detcli.cli.viz import app
from tests.analysis.tiny_data import make_tiny, with_preset

SHORT_SIDES = set(range(480, 801, 32))  # the last RandomChoiceResize of either branch


@pytest.mark.parametrize("prob, branch", [("[1.0, 0.0]", "resize"), ("[0.0, 1.0]", "crop")])
def test_viz_dataset_runs_each_branch_of_detr_r50s_pipeline(tmp_path, prob, branch):
    config = with_preset(make_tiny(tmp_path), "detr_r50").config
    result = CliRunner().invoke(app, ["dataset", str(config), "--num", "2", "--out",
                                      str(tmp_path / "out"), "--json", "--set",
                                      f"data.train.pipeline.3.prob={prob}"])
    assert result.exit_code == 0, result.output
    images = json.loads(result.stdout)["images"]
    assert len(images) == 2
    for image in images:
        h, w = image["img_shape"][:2]
        oh, ow = image["ori_shape"][:2]
        assert min(h, w) in SHORT_SIDES or max(h, w) == 1333  # b.png (2:1) meets the long side
        if branch == "resize":  # a.png 128 x 96 and b.png 100 x 50 keep their aspect
            assert abs(w / h - ow / oh) < 0.01
        else:  # cut to 384..600 pixels a side at 400..600 short side, then resized
            assert 1 / 1.5625 - 0.01 <= w / h <= 1.5625 + 0.01
