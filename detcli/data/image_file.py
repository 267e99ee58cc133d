"""Image files without decoding them: size from the header, and faults (missing, truncated).

H, W: image height and width in pixels; sizes are returned as (W, H), OpenCV shapes are (H, W, 3).

Sizes are (width, height) as the image is displayed, i.e. after its EXIF orientation, because
``LoadImageFromFile`` (OpenCV) applies that orientation and the boxes of a dataset refer to
the displayed image. JPEG, PNG and BMP headers are read directly (a few kilobytes at most);
anything else falls back to a full OpenCV decode. Sizes are cached per (path, mtime, size).

OpenCV decodes a truncated JPEG with a warning on stderr and grey rows at the bottom, so
:func:`image_fault` looks for the end marker first (JPEG EOI after the last scan, PNG IEND)
and only then decodes.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from detcli.data.problems import MISSING_FILE, SIZE_MISMATCH, TRUNCATED_IMAGE, UNREADABLE_IMAGE
from detcli.data.transforms.image_io import file_problem
from detcli.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xDA)}  # markers without a length field
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def _exif_orientation(segment: bytes) -> int:
    """The orientation tag (0x0112) of an APP1 Exif segment body; 1 when absent or unreadable."""
    if not segment.startswith(b"Exif\x00\x00") or len(segment) < 14:
        return 1
    tiff = segment[6:]
    endian = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if endian is None:
        return 1
    (ifd,) = struct.unpack(endian + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(endian + "H", tiff[ifd:ifd + 2])
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
        if len(entry) < 12:
            break
        tag, _, _ = struct.unpack(endian + "HHI", entry[:8])
        if tag == 0x0112:
            return struct.unpack(endian + "H", entry[8:10])[0]
    return 1


def _jpeg_size(f: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from the SOF segment, swapped for a rotating EXIF orientation."""
    orientation = 1
    f.seek(2)
    while True:
        byte = f.read(1)
        if byte != b"\xff":
            return None
        marker = f.read(1)
        while marker == b"\xff":  # fill bytes
            marker = f.read(1)
        if not marker:
            return None
        code = marker[0]
        if code in _JPEG_STANDALONE:
            continue
        header = f.read(2)
        if len(header) < 2:
            return None
        length = struct.unpack(">H", header)[0] - 2
        if code in _JPEG_SOF:
            frame = f.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            return (height, width) if orientation in _ROTATED else (width, height)
        if code == 0xE1 and orientation == 1:
            orientation = _exif_orientation(f.read(length))
        else:
            f.seek(length, os.SEEK_CUR)


def _header_size(path: Path) -> tuple[int, int] | None:
    with open(path, "rb") as f:
        head = f.read(32)
        if head.startswith(JPEG_SOI):
            return _jpeg_size(f)
        if head.startswith(PNG_SIGNATURE) and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head.startswith(b"BM") and len(head) >= 26:
            width, height = struct.unpack("<ii", head[18:26])
            return width, abs(height)
    return None


@functools.lru_cache(maxsize=None)
def _cached_size(path: str, mtime_ns: int, size: int) -> tuple[int, int]:
    size_wh = _header_size(Path(path))
    if size_wh is None or min(size_wh) <= 0:
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot read image {path}: not an image OpenCV can decode")
        size_wh = (img.shape[1], img.shape[0])
    return size_wh


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the displayed image; DataError when missing or unreadable."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    return _cached_size(str(path), stat.st_mtime_ns, stat.st_size)


def image_fault(path: str | Path, expected_wh: tuple[int, int] | None = None) -> tuple[str, str] | None:
    """(problem kind, message) for an image that cannot be used as annotated, or None.

    Decodes the whole image; ``expected_wh`` is the annotated (width, height).
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return MISSING_FILE, "image file does not exist"
    except OSError as exc:
        return UNREADABLE_IMAGE, f"cannot read the file: {exc.strerror or exc}"
    if not data:
        return UNREADABLE_IMAGE, "image file is empty"
    reason = file_problem(data)  # OpenCV decodes a truncated JPEG with only a warning
    if reason:
        return (TRUNCATED_IMAGE if reason.startswith("truncated") else UNREADABLE_IMAGE), reason
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)  # applies EXIF
    if img is None:
        return UNREADABLE_IMAGE, "OpenCV cannot decode it"
    height, width = img.shape[:2]
    if expected_wh is not None and (width, height) != tuple(expected_wh):
        return SIZE_MISMATCH, (f"image is {width}x{height} but the annotation says "
                               f"{expected_wh[0]}x{expected_wh[1]} (width x height)")
    return None
