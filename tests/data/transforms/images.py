"""Test inputs for the transforms: small image files (OpenCV, one EXIF segment by hand) and
results dicts."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np


def exif_app1(orientation: int) -> bytes:
    """A JPEG APP1 segment holding an EXIF IFD0 with one entry: Orientation (0x0112)."""
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, SHORT, count 1, value, pad
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def jpeg_bytes(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def banded_image(h: int = 20, w: int = 40) -> np.ndarray:
    """(h, w, 3) uint8: black with a white band over the first quarter of the columns."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 4] = 255
    return img


def noise_image(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_png(path: Path, img: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), img)
    return path


def make_results(h=20, w=40, boxes=((4, 2, 10, 8),), labels=None):
    """A loaded results dict: an (h, w, 3) float32 ramp image, GT boxes and labels."""
    img = np.arange(h * w * 3, dtype=np.float32).reshape(h, w, 3)
    boxes = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    labels = np.arange(len(boxes)) if labels is None else np.array(labels)
    return {"img": img, "img_shape": img.shape, "ori_shape": img.shape, "gt_bboxes": boxes,
            "gt_labels": labels.astype(np.int64), "bbox_fields": ["gt_bboxes"]}
