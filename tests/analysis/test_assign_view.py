"""``detcli.analysis.assign_view``: GT input (--box, parsed by ``detcli.cli.viz``; COCO by file
name) and the assignment data behind the picture, checked against the anchor generator and
assigner run directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from detcli.analysis.assign_report import AssignReport, PictureFile
from detcli.analysis.assign_view import (
    annotation_gt,
    coco_gt_for_image,
    find_image_record,
    visualize_assignment,
)
from detcli.cli.viz import parse_box, read_gt
from detcli.config.loader import load_config
from detcli.errors import DataError, DetError
from detcli.task.assigners.max_iou import MaxIoUAssigner
from detcli.task.prior_generators.anchor_generator import AnchorGenerator
from detcli.viz.assign_picture import draw_assignment
from detcli.viz.canvas import assignment_canvas_size
from tests.analysis.tiny_data import assign_boxes, make_tiny

NAMES = ("square", "circle", "triangle")


@pytest.fixture
def tiny(tmp_path):
    return make_tiny(tmp_path)


# -- --box ------------------------------------------------------------------------------------

def test_parse_box_reads_corners_and_a_label_by_index_or_name():
    assert parse_box("10,20,30,40", NAMES, 3) == ([10.0, 20.0, 30.0, 40.0], 0)
    assert parse_box(" 1.5, 2 ,3,4 ,2", NAMES, 3) == ([1.5, 2.0, 3.0, 4.0], 2)
    assert parse_box("1,2,3,4,circle", NAMES, 3) == ([1.0, 2.0, 3.0, 4.0], 1)


@pytest.mark.parametrize("text, message", [
    ("1,2,3", "got 3 fields"),
    ("1,2,3,4,5,6", "got 6 fields"),
    ("a,2,3,4", "the first four fields must be numbers"),
    ("1,2,inf,4", "must be finite"),
    ("10,2,5,4", "needs x2 > x1 and y2 > y1"),
    ("1,2,3,4,3", "label 3 is not a class index: the model has 3 classes (0 to 2)"),
    ("1,2,3,4,-1", "label -1 is not a class index"),
    ("1,2,3,4,cirle", "Did you mean 'circle'?"),
])
def test_parse_box_errors_name_the_input_and_what_is_valid(text, message):
    with pytest.raises(DataError) as err:
        parse_box(text, NAMES, 3)
    assert message in str(err.value)
    assert repr(text) in str(err.value) or "label" in str(err.value)


def test_a_label_name_without_known_class_names_asks_for_an_index():
    with pytest.raises(DataError, match="no class names are known .* use a class index from 0 to 2"):
        parse_box("1,2,3,4,square", (), 3)


# -- COCO by file name ------------------------------------------------------------------------

def test_find_image_record_matches_the_base_name_and_a_path_suffix(tmp_path):
    images = [{"id": 1, "file_name": "train/x.jpg"}, {"id": 2, "file_name": "val/x.jpg"},
              {"id": 3, "file_name": "y.jpg"}]
    assert find_image_record(images, tmp_path / "y.jpg", tmp_path / "a.json")["id"] == 3
    assert find_image_record(images, tmp_path / "val" / "x.jpg", tmp_path / "a.json")["id"] == 2
    with pytest.raises(DataError, match="2 images are named 'x.jpg'"):
        find_image_record(images, tmp_path / "x.jpg", tmp_path / "a.json")


def test_find_image_record_lists_close_names_when_missing(tmp_path):
    images = [{"id": k, "file_name": f"img_{k:04d}.jpg"} for k in range(1, 40)]
    with pytest.raises(DataError) as err:
        find_image_record(images, tmp_path / "img_0007.png", tmp_path / "a.json")
    assert "has no image named 'img_0007.png'; close names: img_0007.jpg" in str(err.value)
    with pytest.raises(DataError, match="it has 39 images, e.g. img_0001.jpg"):
        find_image_record(images, tmp_path / "zzz.bmp", tmp_path / "a.json")


def test_coco_gt_uses_dataset_labels_and_makes_crowd_boxes_ignore_boxes(tiny):
    gt = coco_gt_for_image(tiny.ann_file, tiny.image_a)
    assert gt.class_names == ("square", "circle", "triangle")  # ascending category id
    np.testing.assert_array_equal(gt.boxes, [[10, 20, 40, 50], [60, 10, 100, 80]])
    np.testing.assert_array_equal(gt.labels, [0, 1])
    np.testing.assert_array_equal(gt.ignore_boxes, [[0, 60, 20, 80]])
    only = coco_gt_for_image(tiny.ann_file, tiny.image_b, classes=["triangle"])
    np.testing.assert_array_equal(only.labels, [0])


# -- the assignment ---------------------------------------------------------------------------

def _direct(priors_per_level, gt_boxes, assigner):
    """The assigner on the same anchors, run directly: (gt_index (R,), level (R,))."""
    priors = torch.cat(priors_per_level)  # (R, 4)
    level = torch.cat([torch.full((len(p),), k) for k, p in enumerate(priors_per_level)])
    labels = torch.zeros(1, len(gt_boxes), dtype=torch.long)
    result = assigner.assign(priors, torch.tensor(gt_boxes)[None].float(), labels)
    return result.gt_index[0], level, priors


def test_counts_per_level_match_the_assigner_run_directly(tiny):
    cfg = load_config(tiny.config).cfg
    view = assign_boxes(cfg, tiny.image_a, ["10,20,40,50", "60,10,100,80,circle"])
    assert view.pad_shape == (192, 256) and view.img_shape == (192, 256)
    np.testing.assert_allclose(view.gt_boxes, [[20, 40, 80, 100], [120, 20, 200, 160]])  # x2
    assert [gt.class_name for gt in view.gts] == ["square", "circle"]

    generator = AnchorGenerator(strides=[8, 16, 32, 64, 128], ratios=[0.5, 1.0, 2.0],
                                octave_base_scale=2, scales_per_octave=3)
    sizes = [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)]  # 192 x 256 over strides 8 .. 128
    per_level = generator.grid_priors(sizes)
    assigner = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    gt_index, level, priors = _direct(per_level, [[20, 40, 80, 100], [120, 20, 200, 160]], assigner)
    assert len(view.priors) == 9 * (768 + 192 + 48 + 12 + 4) == len(priors)
    np.testing.assert_array_equal(view.priors, priors.numpy())
    np.testing.assert_array_equal(view.gt_index, gt_index.numpy())
    for g, gt in enumerate(view.gts):
        expected = [int(((gt_index == g) & (level == k)).sum()) for k in range(5)]
        assert gt.num_pos_per_level == expected
        assert gt.num_pos == sum(expected) > 0
    expected_levels = [int(((gt_index >= 0) & (level == k)).sum()) for k in range(5)]
    assert [row["positive"] for row in view.per_level()] == expected_levels
    assert view.counts["ignored"] == int((gt_index == -2).sum())
    assert view.counts["negative"] == int((gt_index == -1).sum())  # PseudoSampler keeps them all
    best = torchvision.ops.box_iou(torch.tensor(view.gt_boxes), priors).max(dim=1).values
    np.testing.assert_allclose([gt.best_iou for gt in view.gts], best.numpy(), rtol=1e-6)


def test_a_gt_too_small_for_every_anchor_is_flagged(tiny):
    cfg = load_config(tiny.config, ["model.train_cfg.assigner.min_pos_iou=0.3"]).cfg
    view = assign_boxes(cfg, tiny.image_a, ["10,20,40,50", "100,70,102,72"])
    # a 4 x 4 box against anchors of 16 px and more: IoU at most 16 / 256 < 0.3
    assert view.gts[1].num_pos == 0 and view.gts[1].best_iou <= 16 / 256 + 1e-6
    assert view.zero_positive == [1]
    assert view.to_dict()["gts"][1]["zero_positives"] is True


def test_train_pipeline_flips_boxes_with_the_image(tiny):
    cfg = load_config(tiny.config, ["data.train.pipeline.3.flip_ratio=1.0"]).cfg
    view = assign_boxes(cfg, tiny.image_a, ["10,20,40,50"], train_pipeline=True)
    assert view.flip
    np.testing.assert_allclose(view.gt_boxes, [[256 - 80, 40, 256 - 20, 100]])


def test_ann_file_gt_and_its_missing_entry(tiny, tmp_path):
    cfg = load_config(tiny.config).cfg
    view = visualize_assignment(cfg, tiny.image_a, annotation_gt(cfg, tiny.ann_file, tiny.image_a))
    np.testing.assert_allclose(view.gt_boxes, [[20, 40, 80, 100], [120, 20, 200, 160]])
    np.testing.assert_allclose(view.ignore_boxes, [[0, 120, 40, 160]])
    other = tmp_path / "c.png"
    other.write_bytes(tiny.image_a.read_bytes())
    with pytest.raises(DataError, match="has no image named 'c.png'; close names: b.png, a.png"):
        annotation_gt(cfg, tiny.ann_file, other)


def test_bad_inputs_are_det_errors(tiny, tmp_path):
    cfg = load_config(tiny.config).cfg
    with pytest.raises(DataError, match="image file not found"):
        assign_boxes(cfg, tmp_path / "nope.png", ["1,2,3,4"])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="cannot decode image file"):
        assign_boxes(cfg, junk, ["1,2,3,4"])
    with pytest.raises(DataError, match=r"lies outside .* which is 128x96"):
        assign_boxes(cfg, tiny.image_a, ["200,10,220,20"])
    with pytest.raises(DetError, match="no GT boxes"):
        read_gt(cfg, tiny.image_a, None, ())


def test_picture_size_is_panels_times_input_plus_legend(tiny):
    view = assign_boxes(load_config(tiny.config).cfg, tiny.image_a, ["10,20,40,50", "60,10,100,80"])
    # 6 panels (overview + 5 levels) in 3 columns of 256 + 4 gap: 784 wide; 2 rows of
    # 18 title + 192 image + 4 gap, + 4: 432; legend of 3 markers + totals + 2 GTs = 6 entries,
    # 3 per line (780 // 200): 2 lines of 18, + 4.
    assert draw_assignment(view).shape == (432 + 36 + 4, 784, 3)
    # 2 panels: 524 wide, 218 high; 7 entries (with the negatives marker), 2 per line: 4 lines.
    assert draw_assignment(view, levels=[0], show_negatives=True).shape == (218 + 72 + 4, 524, 3)
    assert assignment_canvas_size((192, 256), 2, 7) == (294, 524)
    # 4 panels make 2 x 2: 524 wide, 2 rows of 214 + 4; 6 entries, 2 per line: 3 lines.
    assert draw_assignment(view, levels=[0, 1, 2]).shape == (432 + 54 + 4, 524, 3)
    # an input of 96 x 128 is scaled by 2 to reach 256 pixels: 2 panels of 192 x 256 again
    assert assignment_canvas_size((96, 128), 2, 7) == (294, 524)
    assert assignment_canvas_size((1600, 1000), 1, 1) == (4 + 18 + 800 + 4 + 18 + 4, 4 + 500 + 4)


def test_the_report_is_the_view_with_where_its_picture_went(tiny):
    view = assign_boxes(load_config(tiny.config).cfg, tiny.image_a, ["10,20,40,50"])
    picture = PictureFile(tiny.image_a.with_name("a_assign.png"), (294, 524))
    data = AssignReport(view, picture).to_dict()
    assert data == {**view.to_dict(), "out": str(picture.path), "picture_shape": [294, 524]}
    assert list(data)[-2:] == ["out", "picture_shape"] and "rcnn" not in data
