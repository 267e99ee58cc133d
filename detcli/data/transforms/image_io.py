"""Reading one image file into an (H, W, 3) uint8 array, and telling a broken file from a good one.

H, W: image height and width after EXIF orientation is applied.

OpenCV decodes with ``IMREAD_COLOR | IMREAD_ANYDEPTH``: that flag set applies the EXIF
orientation tag (``IMREAD_UNCHANGED`` would not), turns grayscale and RGBA (alpha dropped) into
3-channel BGR, and keeps 16-bit depth so it can be scaled to 8 bits here (65535 -> 255).

OpenCV 4 decodes a truncated JPEG with only a warning on stderr (the missing rows come out
grey), so JPEG and PNG files are checked structurally before decoding:

- JPEG: the header segments are walked by their lengths up to the first start-of-scan (this
  skips an EXIF thumbnail, which carries its own end-of-image marker); the file is complete
  when an end-of-image marker ``FF D9`` follows. Inside entropy-coded data a literal ``FF`` is
  always stuffed as ``FF 00``, so ``FF D9`` there can only be the real marker. Bytes after it
  (some cameras append data) are allowed.
- PNG: the chunks are walked by their lengths; the file is complete when ``IEND`` is reached
  within the file.

Other formats rely on the decoder returning nothing.
"""

from __future__ import annotations

import os
import struct

import cv2
import numpy as np

from detcli.errors import DataError

JPEG_MAGIC = b"\xff\xd8"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = 0xDA
# Markers without a length field: TEM, RST0-7, SOI.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8}
_DECODE_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH


def jpeg_problem(data: bytes) -> str | None:
    """Why a JPEG byte string is incomplete, or None when its structure is whole."""
    pos, size = 2, len(data)  # after SOI
    while True:
        if pos + 4 > size:
            return f"truncated: the file ends inside the JPEG header ({size} bytes)"
        if data[pos] != 0xFF:
            return f"corrupt JPEG: expected a marker at byte {pos}, found 0x{data[pos]:02X}"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker == _JPEG_EOI[1]:
            return "corrupt JPEG: end-of-image marker before any image data"
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if end > size:
            return f"truncated: a JPEG segment runs past the end of the file ({size} bytes)"
        if marker == _JPEG_SOS:
            if data.find(_JPEG_EOI, end) < 0:
                return f"truncated: the JPEG has no end-of-image marker ({size} bytes)"
            return None
        pos = end


def png_problem(data: bytes) -> str | None:
    """Why a PNG byte string is incomplete, or None when its chunks reach ``IEND``."""
    pos, size = len(PNG_MAGIC), len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length  # length, type, data, CRC
        if end > size:
            return f"truncated: PNG chunk {kind!r} runs past the end of the file ({size} bytes)"
        if kind == b"IEND":
            return None
        pos = end
    return f"truncated: the PNG has no IEND chunk ({size} bytes)"


def file_problem(data: bytes) -> str | None:
    """A structural problem of an encoded image (JPEG and PNG are checked), or None."""
    if not data:
        return "the file is empty"
    if data.startswith(JPEG_MAGIC):
        return jpeg_problem(data)
    if data.startswith(PNG_MAGIC):
        return png_problem(data)
    return None


def to_uint8(img: np.ndarray, path: str) -> np.ndarray:
    """8-bit copy of a decoded image: 16-bit is scaled by 255/65535; other depths are errors."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img.astype(np.float32) * (255.0 / 65535.0) + 0.5).astype(np.uint8)
    raise DataError(
        f"{path}: unsupported image depth {img.dtype}; 8-bit and 16-bit images are supported"
    )


def read_image(path: str | os.PathLike, channel_order: str = "bgr") -> np.ndarray:
    """Decode ``path`` into an (H, W, 3) uint8 array in ``channel_order`` ("bgr" or "rgb").

    Raises DataError naming the file when it is missing, unreadable, truncated or undecodable.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read image file {path}: {exc.strerror or exc}") from None
    problem = file_problem(data)
    if problem is not None:
        raise DataError(f"broken image file {path}: {problem}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
    if img is None:
        raise DataError(
            f"cannot decode image file {path}: not an image format OpenCV reads, or corrupt"
        )
    if img.ndim == 2:  # defensive: IMREAD_COLOR already gives 3 channels
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    img = to_uint8(img, path)
    if channel_order == "rgb":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img
