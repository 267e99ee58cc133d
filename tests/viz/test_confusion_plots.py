"""The confusion matrix and error breakdown pictures: the numbers drawn, read back from the
axes (cell texts and their positions, bar widths, tick labels) on hand-built inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detcli.evaluation.confusion import ConfusionMatrix
from detcli.evaluation.errors import ERROR_TYPES, ErrorBreakdown, ErrorImpact, ErrorType
from detcli.viz import confusion_plots
from detcli.viz.confusion_plots import (
    confusion_figure,
    error_figure,
    write_confusion_matrix,
    write_error_breakdown,
)

COUNTS = np.array([[1, 0, 1],
                   [1, 1, 0],
                   [2, 1, 0]])  # rows cat, dog, background; columns the same


def matrix(counts: np.ndarray = COUNTS, names: list[str] | None = None) -> ConfusionMatrix:
    names = names or ["cat", "dog"]
    none = np.zeros(1, dtype=np.int64)
    return ConfusionMatrix(counts, names, 0.5, 0.3, none, none, none)


def cell_texts(ax) -> dict[tuple[int, int], str]:
    """(row, col) -> the text drawn in that cell."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
            for t in ax.texts}


def test_the_counts_are_written_in_their_cells_and_empty_cells_stay_blank():
    ax = confusion_figure(matrix()).axes[0]
    assert cell_texts(ax) == {(0, 0): "1", (0, 2): "1", (1, 0): "1", (1, 1): "1",
                              (2, 0): "2", (2, 1): "1"}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["cat", "dog", "background"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat", "dog", "background"]
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "ground-truth class"
    assert "IoU >= 0.50" in ax.get_title() and "scoring >= 0.30" in ax.get_title()
    np.testing.assert_array_equal(ax.images[0].get_array(), COUNTS)


def test_the_normalised_matrix_writes_each_rows_shares():
    ax = confusion_figure(matrix(), normalised=True).axes[0]
    assert cell_texts(ax) == {(0, 0): "0.50", (0, 2): "0.50", (1, 0): "0.50", (1, 1): "0.50",
                              (2, 0): "0.67", (2, 1): "0.33"}
    assert "row-normalised" in ax.get_title()


def test_a_large_matrix_carries_colour_only():
    k = confusion_plots.MAX_ANNOTATED  # K + 1 = MAX_ANNOTATED + 1 rows
    counts = np.eye(k + 1, dtype=np.int64)
    ax = confusion_figure(matrix(counts, [f"c{i}" for i in range(k)])).axes[0]
    assert len(ax.texts) == 0
    assert len(ax.get_yticklabels()) == k + 1


def breakdown(class_names: list[str], per_class: np.ndarray) -> ErrorBreakdown:
    """A breakdown whose type t has count t + 1, per-class dAP ``per_class[:, t]`` and overall
    dAP their mean over classes with GT."""
    impacts = [ErrorImpact(error, t + 1, float(np.nanmean(per_class[:, t])),
                           np.full(len(class_names), t, dtype=np.int64), per_class[:, t])
               for t, error in enumerate(ERROR_TYPES)]
    return ErrorBreakdown(class_names, 0.25, np.full(len(class_names), 0.25), impacts, 0.5,
                          0.1, 100)


PER_CLASS = np.array([[0.0, 0.5, 0.0, 0.02, 0.1, 0.0],
                      [np.nan] * 6,  # a class without GT
                      [0.2, 0.1, 0.0, 0.0, 0.0, 0.3]])


def test_the_bars_are_the_dap_of_each_type_in_tides_order():
    fig = error_figure(breakdown(["cat", "dog", "bird"], PER_CLASS))
    bars, table = fig.axes[:2]
    widths = [p.get_width() for p in bars.patches]
    np.testing.assert_allclose(widths, [0.1, 0.3, 0.0, 0.01, 0.05, 0.15])
    assert [t.get_text() for t in bars.get_yticklabels()] == [
        "Cls (1)", "Loc (2)", "Both (3)", "Dupe (4)", "Bkg (5)", "Miss (6)"]
    assert [t.get_text() for t in bars.texts] == ["0.100", "0.300", "0.000", "0.010", "0.050",
                                                  "0.150"]
    assert "AP50 0.250" in bars.get_title()


def test_the_per_class_table_holds_each_classes_dap_and_a_dash_without_gt():
    table = error_figure(breakdown(["cat", "dog", "bird"], PER_CLASS)).axes[1]
    cells = cell_texts(table)
    assert cells[(0, 1)] == "0.500" and cells[(2, 5)] == "0.300" and cells[(0, 3)] == "0.020"
    assert all(cells[(1, col)] == "-" for col in range(6))
    assert len(cells) == 18
    assert [t.get_text() for t in table.get_yticklabels()] == ["cat", "dog", "bird"]
    assert [t.get_text() for t in table.get_xticklabels()] == [e.short for e in ErrorType]


def test_many_classes_show_those_with_the_largest_total_dap():
    n = confusion_plots.MAX_TABLE_CLASSES + 5
    per_class = np.zeros((n, 6))
    per_class[:, 0] = np.arange(n) / 100  # class i: total i / 100, so the last ones win
    table = error_figure(breakdown([f"c{i}" for i in range(n)], per_class)).axes[1]
    shown = [t.get_text() for t in table.get_yticklabels()]
    assert shown == [f"c{i}" for i in range(5, n)]
    assert f"{n - 5} of {n} classes" in table.get_title()


@pytest.mark.parametrize("normalised", [False, True])
def test_the_pictures_are_written_as_pngs(tmp_path, normalised):
    path = write_confusion_matrix(matrix(), tmp_path / "cm.png", normalised=normalised)
    assert cv2.imread(str(path)) is not None
    path = write_error_breakdown(breakdown(["cat", "dog", "bird"], PER_CLASS),
                                 tmp_path / "errors.png")
    assert cv2.imread(str(path)) is not None
