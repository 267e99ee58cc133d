"""``det viz assign`` on a Mask R-CNN config: the mask targets of the sampled positives
(detcli.analysis.roi_sampling.positive_mask_targets, the training code's mask_targets) and the
picture's strip that shows each one next to its RoI (detcli.viz.roi_picture)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.analysis.assign_view import annotation_gt, pipeline_of, visualize_assignment
from detcli.analysis.roi_sampling import (
    CandidateSampling,
    positive_mask_targets,
    visualize_roi_sampling,
)
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.viz.roi_picture import (
    MASK_ZOOM,
    MAX_MASK_TILES,
    draw_roi_sampling,
    mask_tile_positions,
)
from tests.analysis.tiny_data import ROOT

MASK_RCNN = ROOT / "presets" / "mask_rcnn_tiny_synth.toml"
SMALL = ("[model.backbone]\nbase_channels = 8\n[model.neck]\nout_channels = 32\n"
         "[model.rpn_head]\nfeat_channels = 32\n[model.roi_head.bbox_head]\nfc_out_channels = 64\n"
         "[model.roi_head.mask_head]\nconv_out_channels = 16\n")


def test_mask_targets_of_known_rois_are_the_gt_mask_cut_to_them():
    gt_masks = torch.zeros(1, 96, 128)
    gt_masks[0, 40:80, 40:80] = 1  # a 40-pixel square
    sampling = CandidateSampling(
        boxes=torch.tensor([[40., 40., 80., 80.], [20., 40., 60., 80.], [40., 40., 80., 80.],
                            [0., 0., 10., 10.]]),
        gt_flags=torch.tensor([True, False, False, False]),
        gt_index=torch.tensor([0, 0, 0, -1]), max_iou=torch.tensor([1.0, 0.33, 1.0, 0.0]),
        sampled_pos=torch.tensor([True, True, False, False]),
        sampled_neg=torch.tensor([False, False, False, True]))
    targets = positive_mask_targets(gt_masks, sampling, 28)  # (4, 28, 28)
    assert targets.shape == (4, 28, 28)
    assert bool((targets[0] == 1).all())  # the square's own box: all inside
    # x from 20 to 60 over 28 bins: bins 0-13 end at x = 40 (mean of their samples below 0.5:
    # outside), bins 14-27 lie inside
    expected = torch.zeros(28, 28)
    expected[:, 14:] = 1
    assert torch.equal(targets[1], expected)
    assert bool((targets[2] == 0).all())  # positive by IoU but not sampled: no target
    assert bool((targets[3] == 0).all())  # a negative


@pytest.fixture(scope="module")
def mask_setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mask_assign")
    synth = make_synthetic_dataset(folder / "synth", num_train=0, num_val=4, image_size=128,
                                   seed=3)
    ann_file, images = synth.ann_file("val"), synth.img_prefix("val")
    splits = "".join(f'[data.{s}]\nann_file = "{ann_file}"\nimg_prefix = "{images}/"\n'
                     for s in ("train", "val", "test"))
    config = folder / "mask_rcnn.toml"
    config.write_text(f'extends = ["{MASK_RCNN}"]\n{SMALL}{splits}')
    data = json.loads(Path(ann_file).read_text())
    counts = {img["id"]: 0 for img in data["images"]}
    for ann in data["annotations"]:
        counts[ann["image_id"]] += 1
    busiest = max(data["images"], key=lambda img: counts[img["id"]])
    return load_config(config).cfg, Path(images) / busiest["file_name"], Path(ann_file)


def test_viz_assign_shows_each_sampled_positive_mask_target_next_to_its_roi(mask_setup):
    cfg, image, ann_file = mask_setup
    gt = annotation_gt(cfg, ann_file, image)
    assert gt.segmentations is not None and len(gt.boxes) >= 1
    view = visualize_assignment(cfg, image, gt)
    assert view.gt_masks is not None and view.gt_masks.shape[0] == len(view.gt_boxes)
    rcnn = visualize_roi_sampling(cfg, view, pipeline_of(cfg, False), jitter=6, background=10,
                                  seed=1)
    targets = rcnn.mask_targets
    assert targets is not None and targets.shape == (len(rcnn.candidates), 28, 28)
    assert rcnn.to_dict()["mask_size"] == 28
    assert not targets[~rcnn.sampled_pos].any()  # only sampled positives have a target
    # each GT's own box (added as a proposal, first): its shape's area fraction of the box
    names = [view.class_names[int(label)] for label in view.gt_labels]
    expected_fill = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}
    for g, name in enumerate(names):
        own = int(np.flatnonzero(rcnn.gt_flags & (rcnn.gt_index == g))[0])
        assert targets[own].mean() == pytest.approx(expected_fill[name], abs=0.08), name

    picture = draw_roi_sampling(rcnn)
    plain = draw_roi_sampling(rcnn.__class__(**{**rcnn.__dict__, "mask_targets": None}))
    strip = picture[plain.shape[0]:]  # the strip below the box picture
    np.testing.assert_array_equal(picture[:plain.shape[0]], plain)
    chosen = np.flatnonzero(rcnn.sampled_pos)[:MAX_MASK_TILES]
    assert len(chosen) > 0
    side = 28 * MASK_ZOOM
    for k, (y, x) in zip(chosen, mask_tile_positions(len(chosen), 28, picture.shape[1])):
        drawn = strip[y:y + side, x:x + side]  # (56, 56, 3)
        zoomed = np.kron(targets[k], np.ones((MASK_ZOOM, MASK_ZOOM)))  # (56, 56)
        np.testing.assert_array_equal(drawn, np.repeat((zoomed * 255)[..., None], 3, axis=2))
