"""The anchor report's charts: the numbers behind each picture, read back from the matplotlib
axes (bar heights and positions, line data, labels, legend) on the hand-made set of
tests/analysis/anchor_data.py, whose answers are worked out there, and on hand-built data."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import cv2
import numpy as np
import pytest
from matplotlib.colors import same_color

from detcli.analysis.anchor_analysis import analyze_anchors
from detcli.config.loader import load_config
from detcli.errors import StorageError
from detcli.viz import plots
from detcli.viz.figures import DPI
from tests.analysis.anchor_data import hand_config

EDGES = np.linspace(0.0, 1.0, 21)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return analyze_anchors(load_config(hand_config(tmp_path_factory.mktemp("hand"))).cfg)


def bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches]


def lines_by_label(ax) -> dict[str, np.ndarray]:
    """Each labelled line's (n, 2) data."""
    return {line.get_label(): np.column_stack([line.get_xdata(), line.get_ydata()])
            for line in ax.get_lines()}


def test_histograms_show_each_buckets_counts_and_the_thresholds(report):
    fig = plots.plot_iou_histograms(plots.IoUHistograms.from_summary(report.stats))
    small, medium, large = fig.axes
    # small: GT3 0.2571 in [0.25, 0.3), the two GT1 (0.3590) and GT2 (0.375) in [0.35, 0.4);
    # medium: GT0 and GT4 at 1.0, in the last bin; no large GT
    assert bar_heights(small) == [0] * 5 + [1, 0, 3] + [0] * 12
    assert bar_heights(medium) == [0] * 19 + [2]
    assert bar_heights(large) == [0] * 20
    for ax in fig.axes:
        assert [p.get_x() for p in ax.patches] == pytest.approx(EDGES[:-1])
        assert [p.get_width() for p in ax.patches] == pytest.approx([0.05] * 20)
        assert ax.get_xlim() == (0.0, 1.0)
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("best IoU", "GT boxes")
        dashed = {label: data[:, 0] for label, data in lines_by_label(ax).items()}
        assert dashed == {"pos_iou_thr 0.5": pytest.approx([0.5, 0.5]),
                          "neg_iou_thr 0.15": pytest.approx([0.15, 0.15])}
        assert {line.get_linestyle() for line in ax.get_lines()} == {"--"}
    assert small.get_title() == "small: 4 GT, 1 with no positive"  # b.jpg's GT1
    assert medium.get_title() == "medium: 2 GT, 0 with no positive"
    assert large.get_title() == "large: 0 GT, 0 with no positive"
    assert same_color(small.title.get_color(), plots.ZERO)
    assert same_color(medium.title.get_color(), "black")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["pos_iou_thr 0.5", "neg_iou_thr 0.15"]
    assert fig.get_suptitle().startswith("Best anchor IoU of each GT, by size")


def test_the_y_axis_reaches_the_highest_bar_in_whole_gt_counts():
    counts = np.zeros(20, np.int64)
    counts[[3, 12]] = [7, 41]
    data = plots.IoUHistograms(EDGES, [plots.SizeHistogram("small", counts, 48, 0)], [])
    fig = plots.plot_iou_histograms(data, title="mine")
    (ax,) = fig.axes
    assert bar_heights(ax) == counts.tolist()
    assert ax.get_ylim()[1] >= 41
    ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
    assert all(float(t).is_integer() for t in ticks) and len(ticks) >= 3
    assert ax.get_lines() == [] and fig.legends == []  # no threshold, nothing marked
    assert fig.get_suptitle() == "mine"


def test_only_single_number_thresholds_are_drawn(report):
    pair = dataclasses.replace(report.stats, assigner={**report.stats.assigner,
                                                       "neg_iou_thr": [0.1, 0.3]})
    assert plots.IoUHistograms.from_summary(pair).thresholds == [
        plots.Threshold("pos_iou_thr", 0.5)]
    atss_like = dataclasses.replace(report.stats, pos_iou_thr=None, assigner={"type": "ATSS"})
    assert plots.IoUHistograms.from_summary(atss_like).thresholds == []


def test_shapes_plot_every_gt_the_zero_positive_one_and_the_anchor(report):
    fig = plots.plot_gt_shapes(plots.GTShapes.from_report(report))
    (ax,) = fig.axes
    series = lines_by_label(ax)
    assert set(series) == {"w = h", "GT (5)", "no positive (1)", "anchors, stride 32"}
    # network-input (w, h): GT0 and GT4 32x32, GT1 of a.jpg 28x24, GT2 16x24, GT3 24x16
    assert sorted(map(tuple, series["GT (5)"])) == [(16, 24), (24, 16), (28, 24), (32, 32),
                                                     (32, 32)]
    assert series["no positive (1)"].tolist() == [[28, 24]]  # GT1 of b.jpg
    assert series["anchors, stride 32"].tolist() == [[32, 32]]
    assert series["w = h"].tolist() == [[16, 16], [32, 32]]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
    assert ax.get_xlim() == ax.get_ylim() == (16, 32)  # powers of two around 16..32
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("width (pixels)", "height (pixels)")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "w = h", "GT (5)", "no positive (1)", "anchors, stride 32"]
    zero = next(line for line in ax.get_lines() if line.get_label().startswith("no positive"))
    assert zero.get_marker() == "x" and same_color(zero.get_color(), plots.ZERO)


def test_anchor_shapes_are_split_by_level_in_their_own_colours():
    data = plots.GTShapes(
        gt_wh=np.array([[3.0, 5.0], [100.0, 40.0]]), zero_positive=np.array([False, True]),
        anchors=[(0, 8.0, 8.0), (0, 11.3, 5.7), (1, 16.0, 32.0)], strides=[[8, 8], [16, 32]])
    (ax,) = plots.plot_gt_shapes(data).axes
    series = lines_by_label(ax)
    assert series["anchors, stride 8"].tolist() == [[8, 8], [11.3, 5.7]]
    assert series["anchors, stride 16x32"].tolist() == [[16, 32]]
    assert series["GT (1)"].tolist() == [[3, 5]] and series["no positive (1)"].tolist() == [[100, 40]]
    assert ax.get_xlim() == (2, 128)  # 2 <= 3 and 128 >= 100
    assert [t.get_text() for t in ax.get_yticklabels()] == ["2", "4", "8", "16", "32", "64", "128"]
    colours = [line.get_color() for line in ax.get_lines()
               if line.get_label().startswith("anchors")]
    assert not same_color(colours[0], colours[1])
    assert not any(same_color(c, plots.ZERO) for c in colours)


def test_a_wide_size_range_labels_every_second_power_of_two():
    data = plots.GTShapes(gt_wh=np.array([[1.0, 1.5], [2.0 ** 20, 3.0]]),
                          zero_positive=np.zeros(2, bool), anchors=[(0, 8.0, 8.0)],
                          strides=[[8, 8]])
    (ax,) = plots.plot_gt_shapes(data).axes
    assert ax.get_xlim() == (1, 2 ** 20)  # 21 powers of two: more than MAX_LOG_TICKS
    assert ax.get_xticks().tolist() == [2.0 ** k for k in range(0, 21, 2)]


def test_write_plots_writes_both_pngs_at_the_figure_size(report, tmp_path):
    paths = plots.write_plots(report, tmp_path / "out", suffix="_x")
    assert [p.name for p in paths] == ["best_iou_x.png", "gt_shapes_x.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["best_iou_x.png",
                                                                      "gt_shapes_x.png"]
    histograms, shapes = (cv2.imread(str(p)) for p in paths)
    assert histograms.shape == (round(3.8 * DPI), 12 * DPI, 3)
    assert shapes.shape == (round(5.6 * DPI), round(7.2 * DPI), 3)


def test_write_plots_names_the_file_it_cannot_write(report, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(StorageError, match="best-IoU histograms.*blocker"):
        plots.write_plots(report, blocker)


def test_det_help_does_not_import_matplotlib():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom detcli.cli.main import app\n"
            "for args in (['--help'], ['analyze', 'anchors', '--help'], ['viz', '--help']):\n"
            "    assert CliRunner().invoke(app, args).exit_code == 0, args\n"
            "print(sorted(m for m in sys.modules if m.startswith('matplotlib')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
