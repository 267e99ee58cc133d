"""``det analyze anchors`` and ``det viz assign``'s libraries on FCOS and ATSS: the parts they
build, the assignment checked against the head's rule and the assigner run directly, the
point-coverage report by hand (tests/analysis/fcos_atss_data.py) and what the pictures explain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detcli.analysis.anchor_analysis import analyze_anchors
from detcli.analysis.assignment import AssignmentParts, assign_image
from detcli.config.loader import load_config
from detcli.task.assigners import ATSSAssigner
from detcli.task.assigners.fcos_rule import (
    DEFAULT_RANGES,
    FCOSTargetAssigner,
    fcos_targets,
)
from detcli.task.prior_generators import AnchorGenerator, MlvlPointGenerator
from detcli.task.samplers import PseudoSampler
from detcli.viz.assign_picture import draw_assignment, draw_regions, legend_entries, panel_title
from detcli.viz.canvas import assignment_canvas_size
from tests.analysis.fcos_atss_data import ATSS, FCOS, fcos_hand_config, on_tiny
from tests.analysis.tiny_data import assign_boxes, make_tiny

SIZES = [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]  # a 192 x 256 input over strides 8 .. 128
BOXES = ["10,20,40,50", "60,10,100,80,circle"]  # -> [20, 40, 80, 100], [120, 20, 200, 160]
GT = torch.tensor([[20.0, 40, 80, 100], [120, 20, 200, 160]])


@pytest.fixture
def tiny(tmp_path):
    return make_tiny(tmp_path)


def test_fcos_parts_are_point_cells_with_the_heads_rule():
    parts = AssignmentParts.from_config(load_config(FCOS).cfg)
    assert parts.point_based and isinstance(parts.assigner, FCOSTargetAssigner)
    assert isinstance(parts.sampler, PseudoSampler) and parts.pos_iou_thr is None
    assert parts.anchor_cfg.type == "MlvlPointGenerator" and parts.num_levels == 5
    assert parts.anchor_key == "model.bbox_head.strides"  # where FCOS's points are configured
    assert AssignmentParts.from_config(load_config(ATSS).cfg).anchor_key == \
        "model.bbox_head.anchor_generator"
    priors, level = parts.priors((64, 64))
    assert priors[:2].tolist() == [[0, 0, 8, 8], [8, 0, 16, 8]]  # points (4, 4), (12, 4)
    assert parts.level_counts((64, 64)) == [64, 16, 4, 1, 1] == torch.bincount(level).tolist()


def test_fcos_assignment_is_the_heads_target_rule():
    parts = AssignmentParts.from_config(load_config(FCOS).cfg)
    result = assign_image(parts, GT, torch.tensor([0, 1]), (192, 256))
    points = MlvlPointGenerator(strides=[8, 16, 32, 64, 128]).grid_priors(SIZES, with_stride=True)
    counts = [len(p) for p in points]
    ranges = torch.cat([torch.tensor([r]).expand(c, 2) for r, c in zip(DEFAULT_RANGES, counts)])
    points = torch.cat(points)
    direct = fcos_targets(points, points[:, 2:], ranges, GT[None], torch.tensor([[0, 1]]), 3)
    assert torch.equal(result.gt_index, direct.gt_index[0])
    assert result.num_pos.tolist() == [int((direct.gt_index[0] == g).sum()) for g in (0, 1)]
    # 60 x 60 fits level 0's range [-1, 64] whole; 80 x 140 has every point's largest distance
    # in [70, 128]: level 1 only
    assert result.num_pos_per_level.tolist() == [[49, 0, 0, 0, 0], [0, 28, 0, 0, 0]]


def test_atss_assignment_is_the_assigner_run_directly():
    parts = AssignmentParts.from_config(load_config(ATSS).cfg)
    assert isinstance(parts.assigner, ATSSAssigner) and not parts.point_based
    result = assign_image(parts, GT, torch.tensor([0, 1]), (192, 256))
    anchors = AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[1.0], octave_base_scale=4,
                              scales_per_octave=1).grid_priors(SIZES)
    direct = ATSSAssigner(topk=9).assign(torch.cat(anchors), GT[None], torch.tensor([[0, 1]]),
                                         num_level_priors=[len(a) for a in anchors])
    assert torch.equal(result.gt_index, direct.gt_index[0])
    assert (result.num_pos > 0).all()


def test_fcos_point_coverage_report_by_hand(tmp_path):
    summary = analyze_anchors(load_config(fcos_hand_config(tmp_path)).cfg, "val").summary
    assert summary["anchors"]["type"] == "MlvlPointGenerator"
    assert summary["anchors"]["shapes"] == [[[16.0, 16.0]]]  # the stride-sized cell
    assert summary["assigner"]["type"] == "FCOSTargets"
    overall = summary["overall"]
    assert summary["zero_positive_share"] == round(1 / 6, 4)
    assert overall["positives_per_gt"] == {"mean": round(14 / 6, 2), "median": 2.0, "max": 4}
    (lost,) = summary["zero_positive_gts"]
    assert (lost["image"], lost["input_box"]) == ("b.jpg", [52.0, 0.0, 80.0, 24.0])
    assert summary["by_level"][0]["positive_priors"] == 14
    assert summary["pos_iou_thr"] is None and overall["low_quality_only_share"] == 0.0


def test_fcos_view_explains_regions_and_the_picture_draws_them(tiny):
    view = assign_boxes(load_config(on_tiny(tiny, FCOS)).cfg, tiny.image_a, BOXES)
    regions = view.explained.regions
    assert regions["eligible"].shape == (5, 2, 4) and regions["center"] is None
    # GT 1 (80 x 140) cannot sit on level 0 whole: its range [-1, 64] cuts the top and bottom
    np.testing.assert_allclose(regions["eligible"][0, 1], [136, 96, 184, 84])  # empty: y2 < y1
    assert view.to_dict()["regress_ranges"][1] == [64.0, 128.0]
    assert panel_title(view, 1, False) == "L1 stride 16 range [64, 128]: 28 pos"
    assert panel_title(view, 4, False).startswith("L4 stride 128 range [512, inf]")
    entries = legend_entries(view, False)
    assert ("where a point may be pos", "region", entries[3][2]) == entries[3]
    picture = draw_assignment(view)
    assert picture.shape[:2] == assignment_canvas_size(view.pad_shape, 6, len(entries))


def test_draw_regions_shades_the_region_but_not_its_hole():
    panel = np.zeros((40, 40, 3), np.uint8)
    regions = {"eligible": np.array([[[4.0, 4, 36, 36]]]),
               "too_close": np.array([[[12.0, 12, 28, 28]]]),
               "center": np.array([[[2.0, 2, 38, 38]]]), "regress_ranges": [(-1, 64)]}
    draw_regions(panel, regions, 0, 1.0, [(0, 200, 0)])
    assert panel[8, 8, 1] > 0 and panel[20, 20].sum() == 0  # shaded; the hole left clear
    assert panel[2, 2, 1] == 200  # the centre region's dashed outline starts at its corner


def test_atss_view_shows_candidates_and_thresholds(tiny):
    view = assign_boxes(load_config(on_tiny(tiny, ATSS)).cfg, tiny.image_a, BOXES)
    cand = view.explained.candidates
    assert cand.shape == (2, 9 + 9 + 9 + 9 + 4)  # topk 9 per level; level 4 has 2 x 2 anchors
    priors = torch.from_numpy(view.priors)
    direct = ATSSAssigner(topk=9).candidates(priors, GT[None], torch.tensor([[0, 1]]),
                                             [768, 192, 48, 12, 4])
    np.testing.assert_allclose([gt.iou_threshold for gt in view.gts],
                               direct.iou_threshold[0].numpy(), rtol=1e-6)
    assert view.to_dict()["gts"][0]["iou_threshold"] == round(view.gts[0].iou_threshold, 4)
    entries = legend_entries(view, False)
    assert entries[3][:2] == ("ATSS candidate, not pos", "candidate")
    assert f"thr {view.gts[1].iou_threshold:.2f}" in entries[-1][0]
    picture = draw_assignment(view, levels=[0, 1])
    assert picture.shape[:2] == assignment_canvas_size(view.pad_shape, 3, len(entries))
