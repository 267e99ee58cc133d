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
    assert image_fault(junk) == ("unreadable_image", "not a JPEG image: the file starts with the "
                                 "bytes " + " ".join(["00"] * 16) + ", which is no image format")
    junk_ppm = write(tmp_path / "junk.ppm", b"\x00" * 100)  # an extension not checked by its header
    assert image_fault(junk_ppm) == ("unreadable_image", "OpenCV cannot decode it")
    assert image_fault(good, (64, 96)) == (
        "size_mismatch", "image is 96x64 but the annotation says 64x96 (width x height)")


def test_header_fault_reads_the_format_the_first_bytes_announce(tmp_path):
    import cv2

    from detcli.data.image_file import header_fault, sniff_format

    img = noise_image(h=16, w=24)
    for ext, name in ((".jpg", "JPEG"), (".png", "PNG"), (".bmp", "BMP"), (".webp", "WebP"),
                      (".tiff", "TIFF"), (".gif", "GIF")):
        data = cv2.imencode(ext, img)[1].tobytes()
        assert sniff_format(data[:32]) == name, ext
        assert header_fault(write(tmp_path / f"a{ext}", data)) is None
        assert header_fault(write(tmp_path / f"a{ext.upper()}", data)) is None  # case of the suffix
    assert sniff_format(b"BM is a text file that starts with BM") is None  # no DIB header size
    assert header_fault(tmp_path / "missing.png") == ("missing_file", "image file does not exist")
    assert header_fault(tmp_path) == ("unreadable_image", "a folder, not an image file")
    assert header_fault(write(tmp_path / "text.png", b"hello")) == (
        "unreadable_image", "not a PNG image: the file starts with the text 'hello', which is no "
                            "image format")
    assert header_fault(write(tmp_path / "x.pgm", b"P5 anything")) is None  # not checked: no rule
