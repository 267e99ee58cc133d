"""The matplotlib house style: a figure becomes a PNG of its size, written atomically."""

from __future__ import annotations

import cv2
import pytest

from detcli.errors import StorageError
from detcli.viz.figures import DPI, colour, new_figure, save_figure


def test_a_saved_figure_is_a_png_of_the_figure_size(tmp_path):
    fig, ax = new_figure(4.0, 3.0)
    ax.plot([0, 1], [0, 1], color=colour(0))
    path = save_figure(fig, tmp_path / "sub" / "line.png")
    image = cv2.imread(str(path))
    assert image.shape == (3 * DPI, 4 * DPI, 3)
    assert sorted(p.name for p in path.parent.iterdir()) == ["line.png"]  # no temporary left


def test_a_grid_of_axes_comes_back_as_an_array():
    _, axes = new_figure(rows=2, cols=3, squeeze=False)
    assert axes.shape == (2, 3)


def test_writing_where_a_file_blocks_the_folder_names_the_path(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    fig, _ = new_figure()
    with pytest.raises(StorageError, match="blocker"):
        save_figure(fig, blocker / "chart.png", "the PR curves")
