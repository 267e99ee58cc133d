"""LoadImageFromFile (EXIF, grayscale, RGBA, 16-bit, broken files) and LoadAnnotations."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.data.transforms.image_io import file_problem, jpeg_problem, png_problem, read_image
from detcli.data.transforms.loading import LoadAnnotations, LoadImageFromFile
from detcli.errors import DataError
from tests.data.transforms.images import (
    banded_image,
    exif_app1,
    jpeg_bytes,
    noise_image,
    write,
    write_png,
)


def results_for(path, **extra):
    return {"img_info": {"id": 7, "file_name": path.name, "filename": str(path), "height": 0,
                         "width": 0}, "img_prefix": str(path.parent), "image_id": 7, **extra}


@pytest.mark.parametrize(
    "orientation, shape, white_at",
    [
        (1, (20, 40, 3), "left"),  # as stored
        (3, (20, 40, 3), "right"),  # rotated 180
        (6, (40, 20, 3), "top"),  # rotated 90 clockwise: the left band goes to the top
        (8, (40, 20, 3), "bottom"),  # rotated 90 counter-clockwise
    ],
)
def test_exif_orientation_is_applied(tmp_path, orientation, shape, white_at):
    data = jpeg_bytes(banded_image(20, 40))  # white band in columns 0-9
    path = write(tmp_path / "o.jpg", data[:2] + exif_app1(orientation) + data[2:])
    out = LoadImageFromFile()(results_for(path))
    img = out["img"]
    assert img.shape == shape and img.dtype == np.uint8
    assert out["img_shape"] == shape and out["ori_shape"] == shape
    corner = {"left": img[:, :5], "right": img[:, -5:], "top": img[:5], "bottom": img[-5:]}[white_at]
    opposite = {"left": img[:, -5:], "right": img[:, :5], "top": img[-5:], "bottom": img[:5]}[white_at]
    assert corner.mean() > 240 and opposite.mean() < 15


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    img = read_image(write_png(tmp_path / "g.png", gray))
    assert img.shape == (12, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)


def test_rgba_drops_alpha_and_keeps_bgr(tmp_path):
    bgra = np.zeros((5, 6, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 200, 128
    img = read_image(write_png(tmp_path / "a.png", bgra))
    assert img.shape == (5, 6, 3)
    np.testing.assert_array_equal(img[0, 0], [10, 20, 200])
    rgb = read_image(tmp_path / "a.png", channel_order="rgb")
    np.testing.assert_array_equal(rgb[0, 0], [200, 20, 10])


def test_16_bit_is_scaled_to_8_bit(tmp_path):
    img16 = np.zeros((2, 3, 3), np.uint16)
    img16[0, 0] = 65535  # -> 255
    img16[0, 1] = 257 * 100  # -> 100
    img16[0, 2] = 128  # 128 * 255 / 65535 = 0.498 -> 0
    img16[1, 0] = 129  # 0.502 -> 1
    img = read_image(write_png(tmp_path / "d.png", img16))
    assert img.dtype == np.uint8
    assert img[0, 0].tolist() == [255] * 3 and img[0, 1].tolist() == [100] * 3
    assert img[0, 2].tolist() == [0] * 3 and img[1, 0].tolist() == [1] * 3


def test_to_float32(tmp_path):
    path = write_png(tmp_path / "n.png", noise_image(8, 8))
    out = LoadImageFromFile(to_float32=True)(results_for(path))
    assert out["img"].dtype == np.float32
    assert out["filename"] == str(path) and out["ori_filename"] == "n.png"
    assert out["img_fields"] == ["img"]


def test_truncated_jpeg_is_detected(tmp_path):
    data = jpeg_bytes(noise_image())
    assert jpeg_problem(data) is None
    path = write(tmp_path / "cut.jpg", data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.jpg.*truncated"):
        LoadImageFromFile()(results_for(path))
    assert "truncated" in jpeg_problem(data[:-2])  # only the end-of-image marker missing
    assert "truncated" in jpeg_problem(data[:10])  # cut inside the header


def test_jpeg_check_skips_an_exif_thumbnail_and_allows_trailing_bytes():
    data = jpeg_bytes(noise_image())
    # An APP1 segment whose payload holds FF D9, as an embedded thumbnail does.
    fake_thumb = b"\xff\xe1\x00\x06" + b"\xff\xd8\xff\xd9"  # length counts itself
    with_thumb = data[:2] + fake_thumb + data[2:]
    assert jpeg_problem(with_thumb) is None
    assert "truncated" in jpeg_problem(with_thumb[: len(with_thumb) // 2])
    assert jpeg_problem(data + b"appended by a camera") is None


def test_truncated_png_is_detected(tmp_path):
    path = write_png(tmp_path / "n.png", noise_image())
    data = path.read_bytes()
    assert png_problem(data) is None
    cut = write(tmp_path / "cut.png", data[:-30])
    with pytest.raises(DataError, match=r"cut\.png.*truncated"):
        read_image(cut)


def test_missing_empty_and_non_image_files(tmp_path):
    with pytest.raises(DataError, match=r"not found: .*nope\.jpg"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(DataError, match=r"empty\.jpg.*empty"):
        read_image(write(tmp_path / "empty.jpg", b""))
    with pytest.raises(DataError, match=r"cannot decode image file .*text\.jpg"):
        read_image(write(tmp_path / "text.jpg", b"hello, not an image"))
    assert file_problem(b"hello") is None  # unknown formats are left to the decoder


def test_load_annotations_copies_and_lists_bbox_fields():
    ann = {"bboxes": np.array([[1, 2, 3, 4]], np.float32), "labels": np.array([2]),
           "bboxes_ignore": np.array([[5, 5, 9, 9]], np.float32)}
    out = LoadAnnotations()({"ann_info": ann, "bbox_fields": []})
    assert out["bbox_fields"] == ["gt_bboxes", "gt_bboxes_ignore"]
    assert out["gt_bboxes"].dtype == np.float32 and out["gt_labels"].dtype == np.int64
    np.testing.assert_array_equal(out["gt_labels"], [2])
    out["gt_bboxes"] += 100  # a later transform must not reach the dataset's arrays
    assert ann["bboxes"][0, 0] == 1
    np.testing.assert_array_equal(out["gt_bboxes_ignore"], [[5, 5, 9, 9]])


def test_load_annotations_empty_and_bad_shapes():
    ann = {"bboxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
           "bboxes_ignore": np.zeros((0, 4), np.float32)}
    out = LoadAnnotations()({"ann_info": ann})
    assert out["gt_bboxes"].shape == (0, 4) and out["gt_labels"].shape == (0,)
    with pytest.raises(DataError, match=r"shape \(B, 4\)"):
        LoadAnnotations()({"ann_info": {"bboxes": np.zeros((2, 3)), "labels": [0, 1]}})
    with pytest.raises(DataError, match="ann_info"):
        LoadAnnotations()({})
