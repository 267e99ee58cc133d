"""det data synth's segmentations: the painted shapes as polygons, nothing else changed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.data.datasets import CocoDataset
from detcli.data.loader import build_dataloader
from detcli.data.synth import (
    MAX_SAGITTA,
    _segmentation,
    _shape_mask,
    ensure_synthetic_dataset,
    make_synthetic_dataset,
)
from detcli.data.transforms import LoadAnnotations
from detcli.structures.masks import polygons_to_bitmap
from tests.data.fixtures.synth_digests import FIXTURE, SPECS, digests

# (w, h) box sizes from the smallest shape (12) to the largest of a 256 image, with the worst
# cases of a full sweep (every w in 12..140 step 3, h step 5): (12, 27) for the ellipse and the
# flat (48, 12) triangle, whose slanted sides run through many pixel centres exactly
SIZES = [(12, 12), (12, 27), (13, 20), (20, 13), (48, 12), (33, 64), (64, 33), (101, 140),
         (140, 101)]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_images_boxes_and_areas_are_the_bytes_they_were_before_masks(tmp_path, name):
    """Digests written by the generator before it wrote segmentations (the fixture's script)."""
    expected = json.loads(FIXTURE.read_text())[name]
    assert digests(make_synthetic_dataset(tmp_path, **SPECS[name]).root) == expected


@pytest.mark.parametrize("kind, min_iou", [(0, 1.0), (1, 0.965), (2, 0.92)])
def test_polygons_rasterise_to_the_painted_pixels(kind, min_iou):
    """Square exact. Ellipse and triangle up to pycocotools' rules: vertices rounded to 1/5
    pixel, and a pixel centre exactly on an edge counts on the right and bottom edges only,
    where ``_shape_mask`` paints every centre on its boundary."""
    for w, h in SIZES:
        for flip in (False, True):
            x, y = 3, 5
            painted = np.zeros((h + 10, w + 8), np.uint8)
            painted[y:y + h, x:x + w] = _shape_mask(kind, w, h, flip)
            raster = polygons_to_bitmap(_segmentation(kind, x, y, w, h, flip), h + 10, w + 8)
            iou = (painted & raster).sum() / (painted | raster).sum()
            assert iou >= min_iou, (kind, w, h, flip, iou)


def test_circle_polygons_have_enough_vertices():
    (ring,) = _segmentation(1, 0, 0, 140, 140, False)
    points = np.array(ring).reshape(-1, 2)
    radius = 70.0
    half_angle = np.pi / len(points)
    assert radius * (1 - np.cos(half_angle)) <= MAX_SAGITTA  # every chord close to the circle
    np.testing.assert_allclose(np.hypot(*(points - 70).T), radius, atol=0.01)  # 2 decimals


def test_every_annotation_has_a_mask_inside_its_box(tmp_path):
    synth = make_synthetic_dataset(tmp_path, num_train=10, num_val=0, image_size=128, seed=5)
    data = json.loads(synth.ann_file("train").read_text())
    assert all(list(a) == ["id", "image_id", "category_id", "bbox", "area", "iscrowd",
                           "segmentation"] for a in data["annotations"])
    ds = CocoDataset(ann_file=str(synth.ann_file("train")),
                     img_prefix=str(synth.img_prefix("train")),
                     pipeline=[LoadAnnotations(with_mask=True)])
    for k in range(len(ds)):
        out = ds.prepare(k)
        for box, mask in zip(out["gt_bboxes"], out["gt_masks"].masks):
            ys, xs = np.nonzero(mask)
            tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert np.abs(tight - box).max() <= 1  # the mask fills its box to a pixel
            assert mask[:, :int(box[0])].sum() == 0 and mask[:int(box[1])].sum() == 0


def test_an_older_copy_without_segmentation_is_regenerated(tmp_path):
    root = tmp_path / "synth"
    ensure_synthetic_dataset(root, num_train=2, num_val=1, image_size=64)
    marker = json.loads((root / "synth.json").read_text())
    assert marker["segmentation_version"] == 1
    del marker["segmentation_version"]  # as a copy written before masks were added
    (root / "synth.json").write_text(json.dumps(marker))
    ann = root / "annotations" / "train.json"
    ann.write_text("{}")
    ensure_synthetic_dataset(root, num_train=2, num_val=1, image_size=64)
    assert "images" in json.loads(ann.read_text())  # written again


def test_a_mask_pipeline_through_a_worker_gives_masks_aligned_with_the_boxes(tmp_path):
    """The synthetic set, a Mask R-CNN-style pipeline, a DataLoader with one worker process."""
    synth = make_synthetic_dataset(tmp_path, num_train=4, num_val=0, image_size=96, seed=7,
                                   empty_ratio=0.0)
    pipeline = [
        {"type": "LoadImageFromFile"},
        {"type": "LoadAnnotations", "with_bbox": True, "with_mask": True},
        {"type": "Resize", "img_scale": [80, 80], "keep_ratio": True},
        {"type": "RandomFlip", "flip_ratio": 0.5, "direction": ["horizontal", "vertical"]},
        {"type": "Normalize", "mean": [0, 0, 0], "std": [1, 1, 1], "to_rgb": True},
        {"type": "Pad", "size_divisor": 32},
        {"type": "DefaultFormatBundle"},
        {"type": "Collect", "keys": ["img", "gt_bboxes", "gt_labels", "gt_masks"]},
    ]
    ds = CocoDataset(ann_file=str(synth.ann_file("train")),
                     img_prefix=str(synth.img_prefix("train")), pipeline=pipeline)
    loader = build_dataloader(ds, samples_per_gpu=2, workers_per_gpu=1, shuffle=False,
                              pin_memory=False)
    batches = 0
    for images, targets in loader:
        batches += 1
        n, g = targets.labels.shape
        assert targets.masks.shape == (n, g, *images.pad_shape)
        for k in range(n):
            for slot in range(g):
                mask = targets.masks[k, slot]
                if targets.labels[k, slot] < 0:
                    assert mask.sum() == 0  # a padding slot
                    continue
                ys, xs = torch.nonzero(mask, as_tuple=True)
                tight = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
                assert (tight - targets.boxes[k, slot]).abs().max() <= 1.5  # resized, flipped
    assert batches == 2
