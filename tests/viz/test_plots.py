"""The PNG plots: tick choice by hand, and that each plot draws what it claims (bars, threshold
lines, zero-positive crosses, anchor squares) in its documented colours."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detcli.analysis.anchor_analysis import analyze_anchors
from detcli.config.loader import load_config
from detcli.viz import plots
from tests.analysis.anchor_data import hand_config


def has_colour(img: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((img == np.array(colour, np.uint8)).all(axis=-1).sum())


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return analyze_anchors(load_config(hand_config(tmp_path_factory.mktemp("hand"))).cfg)


def test_nice_ticks_by_hand():
    assert plots.nice_ticks(37) == [0, 10, 20, 30, 40]
    assert plots.nice_ticks(120) == [0, 20, 40, 60, 80, 100, 120]
    assert plots.nice_ticks(0) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_histograms_draw_bars_and_thresholds(report):
    img = plots.plot_iou_histograms(report.summary)
    assert img.dtype == np.uint8 and img.shape[2] == 3
    third = img.shape[1] // 3
    small, medium, large = img[:, :third], img[:, third:2 * third], img[:, 2 * third:]
    assert has_colour(small, plots.BAR) > 0 and has_colour(medium, plots.BAR) > 0
    assert has_colour(large, plots.BAR) == 0  # no large GT in the hand-made set
    assert has_colour(small, plots.POS_LINE) > 0 and has_colour(small, plots.NEG_LINE) > 0


def test_shapes_mark_zero_positive_gts_and_anchors(report):
    img = plots.plot_gt_shapes(report.gt_wh, report.zero_positive, report.anchor_shapes, [32])
    assert report.zero_positive.sum() == 1 and has_colour(img, plots.ZERO) > 0
    assert has_colour(img, plots.GT_DOT) > 0
    assert has_colour(img, plots.LEVEL_COLOURS[0]) > 0
    none = plots.plot_gt_shapes(report.gt_wh, np.zeros(6, bool), report.anchor_shapes, [32])
    assert has_colour(none, plots.ZERO) < has_colour(img, plots.ZERO)  # only the legend's cross


def test_write_plots_writes_readable_pngs(report, tmp_path):
    paths = plots.write_plots(report, tmp_path / "out", suffix="_x")
    assert [p.name for p in paths] == ["best_iou_x.png", "gt_shapes_x.png"]
    for path in paths:
        assert cv2.imread(str(path)) is not None
