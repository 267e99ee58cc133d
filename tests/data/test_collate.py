"""collate: padding to the batch's max H and W, ImageBatch fields, DetTargets padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detcli.data.collate import collate, collate_views
from detcli.errors import DataError


def sample(h, w, boxes, labels, ignore=((),), image_id=0, fill=1.0, scale=1.5):
    img_shape = (h, w, 3)
    return {
        "img": torch.full((3, h, w), fill),
        "gt_bboxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "gt_labels": torch.tensor(labels, dtype=torch.long),
        "gt_bboxes_ignore": torch.tensor(ignore, dtype=torch.float32).reshape(-1, 4),
        "img_metas": {"filename": f"{image_id}.jpg", "image_id": image_id, "img_shape": img_shape,
                      "ori_shape": (h // 2, w // 2, 3), "pad_shape": img_shape,
                      "scale_factor": np.array([scale, scale * 2, scale, scale * 2], np.float32),
                      "flip": False, "flip_direction": None},
    }


def two_samples():
    return [
        sample(20, 32, [[1, 2, 3, 4]], [2], image_id=1, fill=1.0),
        sample(25, 16, [[0, 0, 5, 5], [1, 1, 2, 2], [3, 3, 9, 9]], [0, 1, 4],
               ignore=[[7, 7, 8, 8]], image_id=2, fill=2.0, scale=0.5),
    ]


def test_images_pad_to_batch_max_with_zeros():
    images, _ = collate(two_samples())
    assert images.tensor.shape == (2, 3, 25, 32) and images.tensor.dtype == torch.float32
    assert images.pad_shape == (25, 32) and len(images) == 2
    assert (images.tensor[0, :, :20, :32] == 1).all() and (images.tensor[0, :, 20:] == 0).all()
    assert (images.tensor[1, :, :25, :16] == 2).all() and (images.tensor[1, :, :, 16:] == 0).all()
    assert images.img_shapes.dtype == torch.long and images.img_shapes.tolist() == [[20, 32],
                                                                                    [25, 16]]
    assert images.pad_shapes.tolist() == [[20, 32], [25, 16]]  # each meta's own pad_shape
    assert not images.fills_batch  # neither image is padded to the batch's 25 x 32
    assert images.img_shape_list() == [(20, 32), (25, 16)]
    assert images.ori_shapes == [(10, 16), (12, 8)]
    assert images.scale_factors.tolist() == [[1.5, 3, 1.5, 3], [0.5, 1, 0.5, 1]]
    assert [m["image_id"] for m in images.metas] == [1, 2]
    assert all(m["batch_input_shape"] == (25, 32) for m in images.metas)


def test_pad_shapes_default_to_the_batch_and_every_shape_moves_with_the_images():
    samples = two_samples()
    del samples[1]["img_metas"]["pad_shape"]
    images, _ = collate(samples)
    assert images.pad_shapes.tolist() == [[20, 32], [25, 32]]  # no pad_shape: the batch's (H, W)
    assert not images.fills_batch
    moved = images.to("meta")
    assert {t.device.type for t in (moved.tensor, moved.img_shapes, moved.pad_shapes,
                                    moved.scale_factors)} == {"meta"}
    assert moved.ori_shapes == images.ori_shapes and moved.metas is images.metas


def test_targets_pad_with_minus_one_labels():
    _, targets = collate(two_samples())
    assert targets.boxes.shape == (2, 3, 4) and targets.labels.shape == (2, 3)
    assert targets.labels.tolist() == [[2, -1, -1], [0, 1, 4]]
    assert targets.boxes[0].tolist() == [[1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert targets.num_gts.tolist() == [1, 3]
    assert targets.ignore_boxes.shape == (2, 1, 4)
    assert targets.ignore_valid.tolist() == [[False], [True]]
    assert targets.ignore_boxes[1, 0].tolist() == [7, 7, 8, 8]


def test_no_gt_gives_none_and_scalar_scale_factor_broadcasts():
    samples = two_samples()
    for s in samples:
        for key in ("gt_bboxes", "gt_labels", "gt_bboxes_ignore"):
            del s[key]
        s["img_metas"]["scale_factor"] = 1.0
    images, targets = collate(samples)
    assert targets is None and images.scale_factors.tolist() == [[1.0] * 4] * 2


def test_empty_gt_images_still_pad():
    samples = [sample(8, 8, [], [], image_id=1), sample(8, 8, [], [], image_id=2)]
    _, targets = collate(samples)
    assert targets.boxes.shape == (2, 0, 4) and targets.labels.shape == (2, 0)


def test_bad_batches():
    with pytest.raises(DataError, match="empty batch"):
        collate([])
    with pytest.raises(DataError, match="rejected an image"):
        collate([None])
    with pytest.raises(DataError, match="views") as info:
        collate([{"views": []}])
    assert "collate_views" in info.value.hint
    with pytest.raises(DataError, match="collate_views takes"):
        collate_views(two_samples())
    mixed = two_samples()
    del mixed[1]["gt_bboxes"]
    with pytest.raises(DataError, match="some samples"):
        collate(mixed)
    wrong = two_samples()
    wrong[0]["img"] = torch.zeros(20, 32)
    with pytest.raises(DataError, match=r"1\.jpg.*\(3, H, W\)"):
        collate(wrong)


def with_masks(samples):
    """Give each sample one (G_i, h_i, w_i) mask per box: box g's mask is a block of value 1."""
    for s in samples:
        _, h, w = s["img"].shape
        masks = torch.zeros(s["gt_bboxes"].shape[0], h, w, dtype=torch.uint8)
        for g, (x1, y1, x2, y2) in enumerate(s["gt_bboxes"].long().tolist()):
            masks[g, y1:y2, x1:x2] = 1
        s["gt_masks"] = masks
    return samples


def test_masks_are_aligned_with_box_slots_and_padded_to_the_batch():
    images, targets = collate(with_masks(two_samples()))
    masks = targets.masks
    assert masks.shape == (2, 3, 25, 32) and masks.dtype == torch.uint8
    assert masks.shape[-2:] == images.pad_shape
    # image 0: slot 0 is box [1, 2, 3, 4] -> rows 2..3, cols 1..2; slots 1, 2 are padding
    expected0 = torch.zeros(25, 32, dtype=torch.uint8)
    expected0[2:4, 1:3] = 1
    assert torch.equal(masks[0, 0], expected0)
    assert masks[0, 1:].sum() == 0
    # image 1 (25 x 16): slot 2 is box [3, 3, 9, 9]; nothing beyond column 16
    assert masks[1, 2].sum() == 36 and masks[1, 2, 3:9, 3:9].all()
    assert masks[1, :, :, 16:].sum() == 0
    assert masks.sum(dim=(2, 3)).tolist() == [[4, 0, 0], [25, 1, 36]]
    moved = targets.to("meta")
    assert moved.masks.device.type == "meta" and moved.boxes.device.type == "meta"


def test_no_masks_keeps_masks_none_and_mixed_masks_are_an_error():
    _, targets = collate(two_samples())
    assert targets.masks is None and targets.to("cpu").masks is None
    mixed = with_masks(two_samples())
    del mixed[0]["gt_masks"]
    with pytest.raises(DataError, match="gt_masks and some do not"):
        collate(mixed)
    wrong = with_masks(two_samples())
    wrong[1]["gt_masks"] = wrong[1]["gt_masks"][:2]
    with pytest.raises(DataError, match=r"2\.jpg: gt_masks must be a \(3, h, w\)"):
        collate(wrong)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_targets_keep_their_masks():
    _, targets = collate(with_masks(two_samples()))
    pinned = targets.pin_memory()
    assert pinned.masks.is_pinned() and torch.equal(pinned.masks, targets.masks)
