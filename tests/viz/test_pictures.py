"""``detcli.viz.canvas`` and the assignment picture: colours, dots, text fitting, scaling, and
the red flag."""

from __future__ import annotations

import numpy as np

from detcli.config.loader import load_config
from detcli.viz.assign_picture import draw_assignment
from detcli.viz.canvas import WARN, distinct_colours, draw_dots, fit_text, panel_scale
from tests.analysis.tiny_data import assign_boxes, make_tiny


def test_distinct_colours_are_distinct_and_never_red():
    colours = distinct_colours(20)
    assert len(set(colours)) == 20
    assert not any(r > 150 and g < 100 and b < 100 for b, g, r in colours)
    assert distinct_colours(2) == colours[:2]


def test_draw_dots_sets_size_by_size_squares_and_clips():
    img = np.zeros((5, 5, 3), np.uint8)
    draw_dots(img, np.array([[1.2, 1.0], [4.0, 4.4]]), (9, 9, 9), size=2)
    ys, xs = np.nonzero(img[..., 0])
    # offsets -1 and 0 around (1, 1) and (4, 4)
    assert sorted(zip(ys.tolist(), xs.tolist())) == [(0, 0), (0, 1), (1, 0), (1, 1),
                                                     (3, 3), (3, 4), (4, 3), (4, 4)]


def test_fit_text_cuts_long_text_only():
    assert fit_text("short", 200) == "short"
    cut = fit_text("a very long legend entry that cannot fit", 60)
    assert cut.endswith("..") and len(cut) < 20


def test_panel_scale_brings_the_longer_side_into_256_to_800():
    assert panel_scale((100, 50)) == 2.56
    assert panel_scale((600, 300)) == 1.0
    assert panel_scale((1000, 1600)) == 0.5


def test_only_a_gt_without_positives_draws_red(tmp_path):
    tiny = make_tiny(tmp_path)
    cfg = load_config(tiny.config, ["model.train_cfg.assigner.min_pos_iou=0.3"]).cfg
    fine = assign_boxes(cfg, tiny.image_a, ["10,20,40,50"])
    flagged = assign_boxes(cfg, tiny.image_a, ["10,20,40,50", "100,70,102,72"])
    red = np.array(WARN, np.uint8)
    assert not (draw_assignment(fine) == red).all(axis=-1).any()
    assert (draw_assignment(flagged) == red).all(axis=-1).sum() > 50
