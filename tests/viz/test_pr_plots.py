"""The PR figure draws the curves it is given: its lines hold the accumulated precision."""

from __future__ import annotations

import cv2
import numpy as np

from detcli.evaluation.pr_curves import pr_curves
from detcli.viz.pr_plots import MAX_LEGEND_CLASSES, pr_figure, write_pr_curves
from tests.evaluation.test_coco import CAT
from tests.evaluation.test_pr_curves import CAT_50, CAT_75, worked_case


def test_lines_are_the_classes_then_the_mean_with_ap_in_the_legend(tmp_path):
    acc = worked_case().accumulated
    for iou, cat_curve, name in ((0.5, CAT_50, "AP50"), (0.75, CAT_75, "AP75")):
        curves = pr_curves(acc, ["cat", "dog"], iou)
        ax = pr_figure(curves).axes[0]
        assert len(ax.lines) == 3  # cat, dog, all classes
        np.testing.assert_allclose(ax.lines[CAT].get_xdata(), np.linspace(0, 1, 101))
        np.testing.assert_allclose(ax.lines[CAT].get_ydata(), cat_curve)
        np.testing.assert_allclose(ax.lines[2].get_ydata(), curves.mean_precision)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == [f"cat  {name} {curves.ap[0]:.3f}", f"dog  {name} 1.000",
                          f"all classes  {name} {curves.mean_ap:.3f}"]
    path = write_pr_curves(curves, tmp_path / "pr.png")
    assert cv2.imread(str(path)) is not None


def test_many_classes_leave_only_the_mean_in_the_legend():
    acc = worked_case().accumulated
    curves = pr_curves(acc, ["cat", "dog"], 0.5)
    many = MAX_LEGEND_CLASSES + 1
    curves.class_names = [f"c{k}" for k in range(many)]
    curves.precision = np.repeat(curves.precision[:1], many, axis=0)
    curves.ap = [curves.ap[0]] * many
    ax = pr_figure(curves).axes[0]
    assert len(ax.lines) == many + 1
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        f"all classes  AP50 {curves.mean_ap:.3f}"]
