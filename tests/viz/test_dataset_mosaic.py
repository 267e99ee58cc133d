"""``det viz dataset`` on a Mosaic pipeline: the picture holds four images and the boxes of
all four, where the mosaic put them."""

from __future__ import annotations

import numpy as np

from detcli.config.loader import load_config
from detcli.viz.dataset import sample_dataset
from tests.analysis.tiny_data import make_tiny

# tiny_data's images (w, h) and GT (labels by category id: square 0, circle 1, triangle 2)
SIZES = [(128, 96), (100, 50)]
BOXES = [np.array([[10, 20, 40, 50], [60, 10, 100, 80]], np.float32),
         np.array([[10, 5, 30, 25]], np.float32)]
LABELS = [[0, 1], [2]]
IGNORE = [np.array([[0, 60, 20, 80]], np.float32), np.zeros((0, 4), np.float32)]


def expected(indices):
    """Boxes, labels and ignore boxes of a mosaic of ``indices`` (top-left first) with its
    centre at (128, 96): each image fits 128 x 96 and its corner touches the centre."""
    boxes, labels, ignore = [], [], []
    for loc, k in zip(("tl", "tr", "bl", "br"), indices):
        w, h = SIZES[k]
        ratio = min(96 / h, 128 / w)
        pw, ph = int(w * ratio), int(h * ratio)
        dx = 128 - pw if loc in ("tl", "bl") else 128
        dy = 96 - ph if loc in ("tl", "tr") else 96
        shift = np.array([dx, dy, dx, dy], np.float32)
        boxes.append(BOXES[k] * np.float32(ratio) + shift)
        ignore.append(IGNORE[k] * np.float32(ratio) + shift)
        labels += LABELS[k]
    return np.concatenate(boxes), labels, np.concatenate(ignore)


def test_a_mosaic_picture_has_the_boxes_of_its_four_images(tmp_path):
    tiny = make_tiny(tmp_path)
    config = tmp_path / "mosaic.toml"
    config.write_text(f'''extends = ["{tiny.config}"]
[data.train]
pipeline = [
    {{ type = "LoadImageFromFile" }},
    {{ type = "LoadAnnotations", with_bbox = true }},
    {{ type = "Mosaic", img_scale = [128, 96], center_ratio_range = [1.0, 1.0] }},
    {{ type = "Pad", size_divisor = 32 }},
    {{ type = "DefaultFormatBundle" }},
    {{ type = "Collect", keys = ["img", "gt_bboxes", "gt_labels"] }},
]
''')
    seed = 5
    sample = sample_dataset(load_config(config).cfg, "train", num=1, seed=seed)[0]
    view = sample.view
    np.random.seed(seed)  # the draws Mosaic makes under that seed: prob, then three indices
    np.random.uniform(0, 1)
    indices = [sample.index, *(int(np.random.randint(0, 2)) for _ in range(3))]  # sample: top-left
    boxes, labels, ignore = expected(indices)
    assert view.image.shape == (192, 256, 3) and view.img_shape == (192, 256)
    np.testing.assert_allclose(view.gt_boxes, boxes, rtol=1e-6)
    assert view.gt_labels.tolist() == labels and len(labels) >= 4
    np.testing.assert_allclose(view.ignore_boxes, ignore, rtol=1e-6)
    again = sample_dataset(load_config(config).cfg, "train", num=1, seed=seed)[0].view
    assert np.array_equal(again.image, view.image)  # a seed gives the same picture
