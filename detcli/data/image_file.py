"""Image files without decoding them: size from the header, and faults (missing, truncated,
not an image of their extension).

H, W: image height and width in pixels; sizes are returned as (W, H), OpenCV shapes are (H, W, 3).

Sizes are (width, height) as the image is displayed, i.e. after its EXIF orientation, because
``LoadImageFromFile`` (OpenCV) applies that orientation and the boxes of a dataset refer to
the displayed image. JPEG, PNG and BMP headers are read directly (a few kilobytes at most);
anything else falls back to a full OpenCV decode. Sizes are cached per (path, mtime, size).

OpenCV decodes a truncated JPEG with a warning on stderr and grey rows at the bottom, so
:func:`image_fault` looks for the end marker first (JPEG EOI after the last scan, PNG IEND)
and only then decodes.

:func:`header_fault` is the cheap check training runs first: it reads the first 32 bytes and
compares the format they announce (JPEG ``FF D8 FF``, PNG ``89 'PNG'``, BMP ``'BM'`` with a
DIB header size, WebP ``'RIFF' .... 'WEBP'``, TIFF ``'II*' 0`` / ``'MM' 0 '*'``, GIF
``'GIF87a'`` / ``'GIF89a'``) with the file's extension. A file of a known image extension that
starts like none of them (a text file or an HTML error page saved as ``.jpg``) is an error; an
image of another format than its name says (a PNG named ``.jpg``) is a warning, since OpenCV
decodes by content.
"""

from __future__ import annotations

import functools
import os
import struct
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from detcli.data.problems import (
    MISNAMED_IMAGE,
    MISSING_FILE,
    SIZE_MISMATCH,
    TRUNCATED_IMAGE,
    UNREADABLE_IMAGE,
)
from detcli.data.transforms.image_io import file_problem
from detcli.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xDA)}  # markers without a length field
_ROTATED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
HEADER_BYTES = 32  # what header_fault reads
# The image formats datasets use (all of which OpenCV decodes) and the suffixes that name them.
FORMAT_SUFFIXES = {
    "JPEG": (".jpg", ".jpeg", ".jpe", ".jfif"),
    "PNG": (".png",),
    "BMP": (".bmp", ".dib"),
    "WebP": (".webp",),
    "TIFF": (".tif", ".tiff"),
    "GIF": (".gif",),
}
_SUFFIX_FORMAT = {suffix: name for name, suffixes in FORMAT_SUFFIXES.items() for suffix in suffixes}
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}  # BITMAPCOREHEADER ... BITMAPV5HEADER


def sniff_format(head: bytes) -> str | None:
    """The format (a key of FORMAT_SUFFIXES) a file's first bytes announce, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(PNG_SIGNATURE):
        return "PNG"
    if head.startswith(b"BM") and len(head) >= 18 and \
            struct.unpack("<I", head[14:18])[0] in _BMP_DIB_SIZES:
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    return None


def _shown(head: bytes) -> str:
    """The first bytes of a file as a person would recognise them: text, or hex."""
    text = head[:16]
    if all(32 <= b < 127 or b in (9, 10, 13) for b in text):
        return f"the text {text.decode('ascii')!r}"
    return f"the bytes {text.hex(' ')}"


def format_fault(path: str | Path, head: bytes) -> tuple[str, str] | None:
    """(problem kind, message) when ``head``, a file's first bytes, is not an image of the
    format the file's extension names (module docstring); None when it is, or the extension
    names no format checked here."""
    if not head:
        return UNREADABLE_IMAGE, "image file is empty"
    expected = _SUFFIX_FORMAT.get(Path(path).suffix.lower())
    found = sniff_format(head)
    if expected is None or found == expected:
        return None
    if found is None:
        return UNREADABLE_IMAGE, (f"not a {expected} image: the file starts with {_shown(head)}, "
                                  "which is no image format")
    return MISNAMED_IMAGE, f"a {found} image named {Path(path).suffix}; it loads (by content)"


def _read_bytes(path: str | Path, limit: int = -1) -> bytes | tuple[str, str]:
    """The file's first ``limit`` bytes (all with -1), or the (problem kind, message) of why
    it cannot be read."""
    try:
        with open(path, "rb", buffering=0) as f:  # unbuffered: a header read is 32 bytes, not 8 KB
            return f.readall() if limit < 0 else f.read(limit)
    except FileNotFoundError:
        return MISSING_FILE, "image file does not exist"
    except IsADirectoryError:
        return UNREADABLE_IMAGE, "a folder, not an image file"
    except OSError as exc:
        return UNREADABLE_IMAGE, f"cannot read the file: {exc.strerror or exc}"


def header_fault(path: str | Path) -> tuple[str, str] | None:
    """:func:`image_fault` without decoding: (problem kind, message) for a file that is
    missing, unreadable, empty or not an image of its extension, from its first 32 bytes."""
    head = _read_bytes(path, HEADER_BYTES)
    return head if isinstance(head, tuple) else format_fault(path, head)


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
    data = _read_bytes(path)
    if isinstance(data, tuple):
        return data
    misnamed = format_fault(path, data[:HEADER_BYTES])
    if misnamed is not None and misnamed[0] != MISNAMED_IMAGE:
        return misnamed
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
    return misnamed
