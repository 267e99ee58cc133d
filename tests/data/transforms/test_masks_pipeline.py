"""GT masks through the pipeline: LoadAnnotations(with_mask), every geometric step, formatting.

One 20 x 24 image with two rectangles (integer corners, so polygons and bitmaps agree to the
pixel) and, where it matters, an off-grid triangle (resize: a 1-pixel boundary tolerance).
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from detcli.data.collate import collate
from detcli.data.masks_io import NoMasks
from detcli.data.transforms import (
    Collect,
    Compose,
    DefaultFormatBundle,
    LoadAnnotations,
    MultiScaleFlipAug,
    Pad,
    RandomCrop,
    RandomFlip,
    Resize,
)
from detcli.errors import DataError
from detcli.structures.masks import BitmapMasks, PolygonMasks
from tests.structures.test_masks import assert_boundary_only

H, W = 20, 24
A = [2.0, 3, 10, 3, 10, 9, 2, 9]  # x in [2, 10], y in [3, 9]
B = [14.0, 10, 22, 10, 22, 18, 14, 18]  # x in [14, 22], y in [10, 18]
TRIANGLE = [3.3, 17.6, 9.8, 11.2, 12.7, 18.4]


def rect(x1, y1, x2, y2, h=H, w=W):
    out = np.zeros((h, w), np.uint8)
    out[y1:y2, x1:x2] = 1
    return out


def results(segms=([A], [B]), boxes=((2, 3, 10, 9), (14, 10, 22, 18)), labels=(0, 1)):
    return {
        "img_info": {"id": 1, "file_name": "x.jpg", "filename": "/data/x.jpg", "height": H,
                     "width": W},
        "ann_info": {"bboxes": np.array(boxes, np.float32).reshape(-1, 4),
                     "labels": np.array(labels, np.int64),
                     "bboxes_ignore": np.zeros((0, 4), np.float32), "masks": list(segms),
                     "ann_ids": [f"annotation {k + 1}" for k in range(len(segms))],
                     "source": "ann.json"},
        "img": np.zeros((H, W, 3), np.uint8), "img_shape": (H, W, 3), "ori_shape": (H, W, 3),
        "filename": "/data/x.jpg", "bbox_fields": [],
    }


def loaded(poly2mask=True, **kwargs):
    return LoadAnnotations(with_mask=True, poly2mask=poly2mask)(results(**kwargs))


def test_load_polygons_as_bitmaps_or_polygons():
    out = loaded()
    assert isinstance(out["gt_masks"], BitmapMasks) and out["mask_fields"] == ["gt_masks"]
    np.testing.assert_array_equal(out["gt_masks"].masks, [rect(2, 3, 10, 9), rect(14, 10, 22, 18)])
    kept = loaded(poly2mask=False)["gt_masks"]
    assert isinstance(kept, PolygonMasks) and (kept.height, kept.width) == (H, W)
    np.testing.assert_array_equal(kept.polygons[1][0], B)
    np.testing.assert_array_equal(kept.to_bitmap().masks, out["gt_masks"].masks)
    assert "gt_masks" not in LoadAnnotations()(results())  # with_mask defaults to false
    # masks take the size of the image as decoded (ori_shape), as MMDetection 3.3
    misannotated = results()
    misannotated["img_info"].update(height=50, width=60)
    assert LoadAnnotations(with_mask=True)(misannotated)["gt_masks"].masks.shape == (2, H, W)
    del misannotated["ori_shape"]  # no image loaded: the annotation's size
    assert LoadAnnotations(with_mask=True)(misannotated)["gt_masks"].masks.shape == (2, 50, 60)


def test_load_rle_uncompressed_and_compressed():
    compressed = mask_utils.encode(np.asfortranarray(rect(2, 3, 10, 9)))
    as_text = {"size": [H, W], "counts": compressed["counts"].decode("ascii")}
    # uncompressed, column-major from a zero run: 14 columns and rows 0-9 of column 14 are 0,
    # then per column 14..21 eight ones (rows 10-17) and 12 zeros; the rest zeros
    runs = [14 * H + 10] + [8, 12] * 7 + [8, 2 + 2 * H]
    assert sum(runs) == H * W
    out = loaded(segms=(as_text, {"size": [H, W], "counts": runs}))
    np.testing.assert_array_equal(out["gt_masks"].masks, [rect(2, 3, 10, 9), rect(14, 10, 22, 18)])
    with pytest.raises(DataError, match=r"ann\.json: annotation 2: RLE of size \[5, 5\]"):
        loaded(segms=(as_text, {"size": [5, 5], "counts": [25]}))


def test_an_unusable_mask_turns_its_box_into_an_ignore_box():
    """MMDetection's ignore_flag: no polygon part of 3 points; an RLE kept as polygons."""
    out = loaded(segms=([A], [[1.0, 2.0, 3.0, 4.0]]))  # a 2-point "polygon"
    np.testing.assert_array_equal(out["gt_bboxes"], [[2, 3, 10, 9]])
    np.testing.assert_array_equal(out["gt_labels"], [0])
    np.testing.assert_array_equal(out["gt_bboxes_ignore"], [[14, 10, 22, 18]])
    assert len(out["gt_masks"]) == 1 and "gt_bboxes_ignore" in out["bbox_fields"]
    rle = {"size": [H, W], "counts": [H * W]}
    assert len(loaded(poly2mask=False, segms=([A], rle))["gt_masks"]) == 1


def test_missing_masks_are_errors_naming_the_annotation_or_the_dataset():
    with pytest.raises(DataError, match=r"ann\.json: annotation 2 has no `segmentation`"):
        loaded(segms=([A], None))
    no_masks = results()
    no_masks["ann_info"]["masks"] = NoMasks("VOCDataset voc/train.txt has no instance masks")
    with pytest.raises(DataError, match="VOCDataset voc/train.txt has no instance masks"):
        LoadAnnotations(with_mask=True)(no_masks)


def test_resize_masks_with_the_image():
    out = Resize(img_scale=(48, 40), keep_ratio=True)(loaded())  # x2: 40 x 48
    assert out["gt_masks"].masks.shape == (2, 40, 48)
    np.testing.assert_array_equal(out["gt_masks"].masks[0], rect(4, 6, 20, 18, 40, 48))
    polygons = Resize(img_scale=(48, 40), keep_ratio=True)(loaded(poly2mask=False))["gt_masks"]
    np.testing.assert_array_equal(polygons.polygons[0][0], np.array(A) * 2)
    np.testing.assert_array_equal(polygons.to_bitmap().masks, out["gt_masks"].masks)
    # an off-grid triangle, not keeping the ratio: the two kinds differ only on the boundary
    kw = {"segms": ([TRIANGLE],), "boxes": ((3.3, 11.2, 12.7, 18.4),), "labels": (0,)}
    step = Resize(img_scale=(31, 27), keep_ratio=False)
    assert_boundary_only(step(loaded(poly2mask=False, **kw))["gt_masks"].to_bitmap().masks,
                         step(loaded(**kw))["gt_masks"].masks)


@pytest.mark.parametrize("direction, first", [
    ("horizontal", (14, 3, 22, 9)),  # x -> 24 - x
    ("vertical", (2, 11, 10, 17)),  # y -> 20 - y
    ("diagonal", (14, 11, 22, 17)),
])
def test_flip_masks_in_every_direction(direction, first):
    step = RandomFlip(flip_ratio=1.0, direction=direction)
    bitmaps = step(loaded())
    polygons = step(loaded(poly2mask=False))
    np.testing.assert_array_equal(bitmaps["gt_masks"].masks[0], rect(*first))
    np.testing.assert_array_equal(polygons["gt_masks"].to_bitmap().masks, bitmaps["gt_masks"].masks)
    # the boxes moved the same way as the masks
    x1, y1, x2, y2 = bitmaps["gt_bboxes"][0].astype(int)
    assert (x1, y1, x2, y2) == first


def test_pad_masks_with_zeros_or_pad_val_masks():
    out = Pad(size_divisor=16)(loaded())  # 20 x 24 -> 32 x 32
    assert out["gt_masks"].masks.shape == (2, 32, 32)
    np.testing.assert_array_equal(out["gt_masks"].masks[1], rect(14, 10, 22, 18, 32, 32))
    filled = Pad(size=(24, 24), pad_val={"img": 0, "masks": 1})(loaded())["gt_masks"].masks
    assert filled[0, 20:].all() and filled[0, :20].sum() == 48
    polygons = Pad(size_divisor=16)(loaded(poly2mask=False))["gt_masks"]
    assert (polygons.height, polygons.width) == (32, 32)
    np.testing.assert_array_equal(polygons.to_bitmap().masks, out["gt_masks"].masks)


def test_random_crop_drops_an_instance_with_its_mask(monkeypatch):
    # crop 12 x 12 at (y0, x0) = (0, 0): box B ([14, 22] x [10, 18]) is cut away entirely
    monkeypatch.setattr(np.random, "randint", lambda low, high=None: 0)
    for poly2mask in (True, False):
        out = RandomCrop(crop_size=(12, 12))(loaded(poly2mask=poly2mask))
        assert out["img"].shape == (12, 12, 3)
        np.testing.assert_array_equal(out["gt_bboxes"], [[2, 3, 10, 9]])
        np.testing.assert_array_equal(out["gt_labels"], [0])
        masks = out["gt_masks"].to_bitmap().masks
        assert masks.shape == (1, 12, 12)
        np.testing.assert_array_equal(masks[0], rect(2, 3, 10, 9, 12, 12))


def test_random_crop_clips_polygons_to_the_window(monkeypatch):
    # window x in [8, 20], y in [6, 18]: A keeps x in [8, 10], y in [6, 9]; B keeps all but x > 20
    picks = iter([6, 8])  # y0, then x0
    monkeypatch.setattr(np.random, "randint", lambda low, high=None: next(picks))
    out = RandomCrop(crop_size=(12, 12))(loaded(poly2mask=False))
    ring = out["gt_masks"].polygons[0][0].reshape(-1, 2)
    assert {tuple(p) for p in ring.tolist()} == {(0, 0), (2, 0), (2, 3), (0, 3)}
    np.testing.assert_array_equal(out["gt_masks"].to_bitmap().masks,
                                  [rect(0, 0, 2, 3, 12, 12), rect(6, 4, 12, 12, 12, 12)])
    np.testing.assert_array_equal(out["gt_bboxes"], [[0, 0, 2, 3], [6, 4, 12, 12]])


def pipeline(poly2mask=True, **resize):
    return Compose([
        LoadAnnotations(with_mask=True, poly2mask=poly2mask),
        Resize(img_scale=(48, 40), keep_ratio=True, **resize),
        RandomFlip(flip_ratio=1.0, direction="horizontal"),
        Pad(size_divisor=32),
        DefaultFormatBundle(),
        Collect(keys=["img", "gt_bboxes", "gt_labels", "gt_masks"],
                meta_keys=["filename", "ori_shape", "img_shape", "pad_shape", "scale_factor",
                           "flip", "flip_direction"]),
    ])


def test_format_bundle_gives_a_uint8_tensor_per_sample_and_collate_pads_it():
    sample = pipeline()(results())
    masks = sample["gt_masks"]
    assert masks.dtype == torch.uint8 and masks.shape == (2, 64, 64)  # 40 x 48 padded to 64 x 64
    assert tuple(sample["img"].shape[-2:]) == (64, 64)
    # resized x2, flipped in the 48-wide image: A [2, 10] x [3, 9] -> x [28, 44], y [6, 18]
    expected = torch.from_numpy(rect(28, 6, 44, 18, 64, 64))
    assert torch.equal(masks[0], expected)
    assert torch.equal(pipeline(poly2mask=False)(results())["gt_masks"], masks)
    one = pipeline()(results(segms=([A],), boxes=((2, 3, 10, 9),), labels=(0,)))
    images, targets = collate([one, sample])
    assert targets.masks.shape == (2, 2, 64, 64) and images.pad_shape == (64, 64)
    assert torch.equal(targets.masks[0, 0], expected) and targets.masks[0, 1].sum() == 0
    assert torch.equal(targets.masks[1], masks)


def test_format_bundle_refuses_masks_of_another_size():
    stale = loaded()
    stale["img"] = np.zeros((H + 4, W, 3), np.uint8)  # the image moved without its masks
    with pytest.raises(DataError, match="gt_masks are 20x24 .* image is 24x24"):
        DefaultFormatBundle()(stale)


def test_test_time_views_move_their_own_masks_and_collect_drops_them():
    tta = MultiScaleFlipAug(img_scale=[(24, 20), (48, 40)], flip=True, transforms=[
        Resize(keep_ratio=True), RandomFlip(), Pad(size_divisor=8), DefaultFormatBundle(),
        Collect(keys=["img"], meta_keys=["img_shape", "flip"]),
    ])
    start = loaded()
    views = tta(start)["views"]
    assert len(views) == 4 and all(set(v) == {"img", "img_metas"} for v in views)
    np.testing.assert_array_equal(start["gt_masks"].masks[0], rect(2, 3, 10, 9))  # untouched
    assert start["mask_fields"] == ["gt_masks"]
