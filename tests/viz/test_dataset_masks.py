"""``det viz dataset`` on a pipeline that loads masks: the GT masks come out of the pipeline
with the boxes (resized and flipped with them) and are drawn, filled, under the boxes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.viz.dataset import sample_dataset
from detcli.viz.draw import TITLE_HEIGHT

PRESET = Path(__file__).resolve().parents[2] / "presets" / "retinanet_tiny_synth.toml"
SQUARE = 0


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("viz_masks")
    synth = make_synthetic_dataset(root / "synth", num_train=3, num_val=0, image_size=96, seed=5)
    path = root / "masks.toml"
    path.write_text(f'extends = ["{PRESET}"]\n[data.train]\nann_file = "{synth.ann_file("train")}"\n'
                    f'img_prefix = "{synth.img_prefix("train")}/"\n')
    return path


def centre_inside(shape: tuple[int, int], box: np.ndarray) -> np.ndarray:
    """(H, W) bool: the pixels whose centres lie inside ``box`` (x1, y1, x2, y2)."""
    ys, xs = np.mgrid[: shape[0], : shape[1]] + 0.5
    return (xs > box[0]) & (xs < box[2]) & (ys > box[1]) & (ys < box[3])


def test_masks_follow_resize_and_flip_and_are_drawn_exactly_where_they_are(config):
    overrides = ["data.train.pipeline.1.with_mask=true", "data.train.pipeline.3.flip_ratio=1.0"]
    samples = sample_dataset(load_config(config, overrides).cfg, "train", num=3, seed=0)
    squares = 0
    for sample in samples:
        v = sample.view
        assert v.flip and v.gt_masks is not None
        assert v.gt_masks.shape == (len(v.gt_boxes), *v.pad_shape)
        for mask, box, label in zip(v.gt_masks, v.gt_boxes, v.gt_labels):
            ys, xs = np.nonzero(mask)
            assert xs.min() >= box[0] - 1 and xs.max() <= box[2] and ys.min() >= box[1] - 1
            assert ys.max() <= box[3]  # inside its (flipped, resized) box
            if label == SQUARE:  # a square's mask is its box: the pixel centres inside it
                expected = centre_inside(v.pad_shape, box)
                assert (mask & expected).sum() / (mask | expected).sum() > 0.9
                squares += 1
        picture = sample.draw()[TITLE_HEIGHT:]
        plain = replace(sample, view=replace(v, gt_masks=None)).draw()[TITLE_HEIGHT:]
        changed = (picture != plain).any(axis=2)  # what the masks added
        union = v.gt_masks.any(axis=0)
        assert not (changed & ~union).any()  # nothing outside the masks
        assert changed.sum() >= 0.5 * union.sum()  # the masks under the box outlines/captions
        assert sample.to_dict()["mask_areas"] == [int(m.sum()) for m in v.gt_masks]
    assert squares > 0


def test_without_with_mask_there_are_no_masks(config):
    samples = sample_dataset(load_config(config, []).cfg, "train", num=1, seed=0)
    assert samples[0].view.gt_masks is None and samples[0].to_dict()["mask_areas"] is None
