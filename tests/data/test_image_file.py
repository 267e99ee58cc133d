"""Image headers and faults: sizes without decoding, truncated files found before OpenCV."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detcli.data.image_file import image_fault, image_size
from detcli.errors import DataError
from tests.data.transforms.images import exif_app1, jpeg_bytes, noise_image, write


def png_bytes(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".tiff"])  # tiff: the decode fallback
def test_image_size_matches_opencv(tmp_path, suffix):
    path = tmp_path / f"x{suffix}"
    cv2.imwrite(str(path), noise_image(h=30, w=50))
    assert image_size(path) == (50, 30)
    assert cv2.imread(str(path)).shape[:2] == (30, 50)


@pytest.mark.parametrize("orientation, expected", [(1, (40, 20)), (3, (40, 20)), (6, (20, 40)), (8, (20, 40))])
def test_jpeg_size_follows_exif_orientation_like_opencv(tmp_path, orientation, expected):
    data = jpeg_bytes(noise_image(h=20, w=40))
    path = write(tmp_path / f"o{orientation}.jpg", data[:2] + exif_app1(orientation) + data[2:])
    assert image_size(path) == expected
    h, w = cv2.imread(str(path)).shape[:2]
    assert (w, h) == expected


def test_image_size_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=f"image {tmp_path / 'none.jpg'} does not exist"):
        image_size(tmp_path / "none.jpg")
    bad = write(tmp_path / "bad.gif", b"GIF89a not really")
    with pytest.raises(DataError, match="cannot read image .*bad.gif: not an image OpenCV can decode"):
        image_size(bad)


def test_truncated_files_are_found_before_opencv(tmp_path):
    jpg = jpeg_bytes(noise_image())
    png = png_bytes(noise_image())
    assert image_fault(write(tmp_path / "a.jpg", jpg + b"trailing data after EOI")) is None
    kind, message = image_fault(write(tmp_path / "b.jpg", jpg[: len(jpg) - 200]))
    assert kind == "truncated_image" and "no end-of-image marker" in message
    kind, message = image_fault(write(tmp_path / "c.png", png[:-20]))
    assert kind == "truncated_image" and message.startswith("truncated: ")


def test_image_fault_kinds(tmp_path):
    jpg = jpeg_bytes(noise_image(h=64, w=96))
    good = write(tmp_path / "good.jpg", jpg)
    assert image_fault(good, (96, 64)) is None
    assert image_fault(tmp_path / "missing.jpg") == ("missing_file", "image file does not exist")
    assert image_fault(write(tmp_path / "empty.jpg", b"")) == ("unreadable_image", "image file is empty")
    cut = write(tmp_path / "cut.jpg", jpg[: len(jpg) // 2])
    assert image_fault(cut)[0] == "truncated_image"
    junk = write(tmp_path / "junk.jpg", b"\x00" * 100)
    assert image_fault(junk) == ("unreadable_image", "OpenCV cannot decode it")
    assert image_fault(good, (64, 96)) == (
        "size_mismatch", "image is 96x64 but the annotation says 64x96 (width x height)")
