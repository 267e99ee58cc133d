"""--optimize: its pieces by hand (shape IoU, k-means, parameters, the grid proxy), and the
search fixing a deliberately bad design whose snippet validates when pasted back."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from detcli.analysis.anchor_analysis import AnchorStudy, analyze_anchors
from detcli.analysis.anchor_optimize import (
    AnchorAnalysis,
    AnchorParams,
    grid_best_iou,
    kmeans_iou,
    optimize_anchors,
    shape_iou,
)
from detcli.config.loader import load_config
from detcli.errors import ConfigError
from detcli.task.prior_generators import AnchorGenerator, AnchorGeneratorConfig
from tests.analysis.anchor_data import BAD_ANCHORS, synth_config


def test_shape_iou_by_hand():
    iou = shape_iou(np.array([[2., 2.]]), np.array([[1., 4.], [2., 2.], [4., 4.]]))
    assert iou.tolist() == [[pytest.approx(2 / 6), 1.0, 0.25]]  # 2/(4+4-2), same, 4/16


def test_kmeans_separates_wide_from_tall_and_is_deterministic():
    wh = np.array([[1., 2.], [1., 2.2], [1., 1.8], [2., 1.], [2.2, 1.], [1.8, 1.]])
    centres = kmeans_iou(wh, 2)
    assert centres.tolist() == [[2., 1.], [1., 2.]]  # medians, sorted by h / w
    assert np.array_equal(kmeans_iou(wh, 2, seed=3), centres)


def test_params_round_trip_and_set_args():
    octave = AnchorParams((0.5, 1.0, 2.0), 4.0, 3)
    assert octave.vector().tolist() == [2.0, -1.0, 0.0, 1.0]  # log2: scale, then ratios
    assert octave.with_vector(octave.vector()) == octave
    moved = octave.with_vector(np.array([1.2345, 0.0, 0.0, 0.0]))  # 2 ** 1.2345 = 2.35298
    assert (moved.octave_base_scale, moved.ratios) == (2.353, (1.0, 1.0, 1.0))
    assert octave.set_args() == ["model.bbox_head.anchor_generator.ratios=[0.5, 1.0, 2.0]",
                                 "model.bbox_head.anchor_generator.octave_base_scale=4.0"]
    listed = AnchorParams((1.0,), scales=(1.0, 2.0))
    assert listed.with_vector(np.array([1.0, 2.0, 0.0])) == AnchorParams((1.0,), scales=(2.0, 4.0))
    cfg = listed.config(AnchorGeneratorConfig(strides=[8], ratios=[0.5], octave_base_scale=4,
                                              scales_per_octave=3))
    assert (cfg.scales, cfg.octave_base_scale, cfg.scales_per_octave) == ([1.0, 2.0], None, None)
    with pytest.raises(ConfigError, match="searches AnchorGenerator settings"):
        AnchorParams.from_config(SimpleNamespace(type="SSDAnchorGenerator"))


def test_grid_proxy_uses_the_nearest_grid_anchor():
    # stride 16, one 16 x 16 anchor per location (see tests/analysis/test_assignment.py)
    generator = AnchorGenerator(strides=[16], ratios=[1.0], scales=[1.0])
    boxes = np.array([[8., 8., 24., 24.], [26., 0., 40., 12.]])
    assert grid_best_iou(boxes, generator).tolist() == pytest.approx([1.0, 112 / 312])


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    config = synth_config(tmp_path_factory.mktemp("synth"))
    study = AnchorStudy.from_config(load_config(config, [BAD_ANCHORS]).cfg)
    return config, study, optimize_anchors(study, max_evals=30)


def test_optimize_fixes_a_bad_design(bad):
    _, _, result = bad
    assert result.before.zero_positive_share > 0.05
    assert result.after.zero_positive_share == 0.0
    assert result.score_after >= result.score_seed and result.score_after > result.score_before
    after = result.after.summary["overall"]
    assert after["best_iou"]["mean"] > 0.6 and after["best_iou_above_pos_thr_share"] > 0.9
    assert result.params_after.scales_per_octave == 3 and len(result.params_after.ratios) == 3
    assert result.evaluations <= 30


def test_snippet_and_set_args_validate_and_reproduce_the_result(bad, tmp_path):
    config, _, result = bad
    pasted = load_config(config, [BAD_ANCHORS, *result.params_after.set_args()]).cfg
    again = analyze_anchors(pasted).summary
    assert again["zero_positive_share"] == 0.0
    assert again["overall"] == result.after.summary["overall"]
    snippet = tmp_path / "snippet.toml"
    snippet.write_text(f'extends = ["{config}"]\n' + result.toml())
    anchors = load_config(snippet).cfg.model.bbox_head.anchor_generator
    assert anchors.ratios == list(result.params_after.ratios)
    assert anchors.octave_base_scale == result.params_after.octave_base_scale
    assert "[model.bbox_head.anchor_generator]" in result.toml() and "false" not in result.toml()


def test_search_is_deterministic_and_honours_the_objective(bad):
    _, study, _ = bad
    first = optimize_anchors(study, "mean-iou", max_evals=8)
    second = optimize_anchors(study, "mean-iou", max_evals=8)
    assert first.params_after == second.params_after and first.evaluations == 8
    assert first.score_after[0] == pytest.approx(first.after.summary["overall"]["best_iou"]["mean"],
                                                 abs=1e-4)  # mean-iou ranks by mean IoU first
    assert first.score_after >= first.score_before
    with pytest.raises(ConfigError, match="objective must be 'coverage' or 'mean-iou'"):
        optimize_anchors(study, "recall")
    with pytest.raises(ConfigError, match="max_evals must be >= 2"):
        optimize_anchors(study, max_evals=1)


def test_the_command_report_holds_the_search_once_and_leaves_the_report_alone(bad):
    _, study, result = bad
    report = study.report()
    keys = list(report.summary)
    plain = AnchorAnalysis(report).to_dict()
    assert plain == report.summary and "optimize" not in plain
    data = AnchorAnalysis(report, result).to_dict()
    assert list(data) == [*keys, "optimize"]  # the report's keys in order, the search last
    assert list(report.summary) == keys  # serialising did not add the search to the report
    found = data["optimize"]
    assert "before_report" not in found and found["after_report"] == result.after.summary
    assert found == {k: v for k, v in result.to_dict().items() if k != "before_report"}
    assert result.to_dict()["before_report"] == result.before.summary
