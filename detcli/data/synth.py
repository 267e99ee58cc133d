"""A synthetic COCO-format detection dataset: coloured shapes on textured backgrounds.

h, w: an image's height and width; bh, bw: a shape's box height and width (pixels).

Layout under ``out_dir``: ``annotations/{train,val}.json`` (COCO), ``train/`` and ``val/``
(images), and ``synth.json`` (the parameters, so :func:`ensure_synthetic_dataset` can tell
whether an existing copy is the one asked for).

Each image is a colour gradient with smooth blotches and pixel noise; it holds 0 to
``max_objects`` non-overlapping shapes, one class per shape kind with a clear colour:
"square" (a red axis-aligned rectangle, any aspect ratio), "circle" (a green ellipse) and
"triangle" (a blue isosceles triangle, apex up or down). Sizes are log-uniform from 12 pixels
to about half the shorter image side. A box is the tight box of the shape's pixels, COCO
``[x, y, w, h]`` with ``x + w`` one past the last pixel (the dataset's x2). Everything comes
from one seeded numpy generator, so a seed gives byte-identical files.

Each annotation also has a ``segmentation``: one polygon in image pixels (pixel edges, so a
pixel's centre is at +0.5) that bounds the region whose pixel centres were painted: the box
for a square, the inscribed ellipse as a polygon of enough vertices that no chord is more
than 0.05 pixel inside it, and the triangle's exact region (a hexagon: the half-pixel
widening ``_shape_mask`` gives it near the apex included). Rasterised by pycocotools it
matches the painted pixels: exactly for a square; for an ellipse IoU >= 0.965 and for a
triangle >= 0.92 at every box size from 12 to 140 pixels (mean 0.996; pycocotools rounds
vertices to 1/5 pixel and counts a pixel centre on an edge only on right and bottom edges,
where the painter takes every centre on the boundary; ``tests/data/test_synth_masks.py``).
The polygons use no random numbers: images, boxes and areas are the same bytes as before
masks were added (``SEGMENTATION_VERSION`` in ``synth.json`` tells an older copy apart).

A folder that cannot be written (``out_dir`` is a file, no permission, a full disk) is a
:class:`~detcli.errors.StorageError` naming the path and the cause.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from detcli.errors import DataError, StorageError, writing

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # bump when the output for a given seed changes
SEGMENTATION_VERSION = 1  # annotations carry `segmentation` (images, boxes, areas unchanged)
MAX_SAGITTA = 0.05  # pixels: how far a circle polygon's chord may fall inside the ellipse
SYNTH_CLASSES = ("square", "circle", "triangle")
_COLOURS_BGR = np.array([[40, 40, 215], [50, 190, 50], [210, 90, 30]], dtype=np.float32)  # per class
MARKER = "synth.json"
MIN_OBJECT = 12  # pixels, shorter side of the smallest shape
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SynthDataset:
    """Where a generated dataset lives: ``ann_file(split)`` and ``img_prefix(split)``."""

    root: Path
    classes: tuple[str, ...] = SYNTH_CLASSES

    def ann_file(self, split: str) -> Path:
        return self.root / "annotations" / f"{split}.json"

    def img_prefix(self, split: str) -> Path:
        return self.root / split


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) float32: a gradient between two muted colours plus smooth blotches."""
    grey = rng.uniform(70, 185, size=2)[:, None] + rng.uniform(-25, 25, size=(2, 3))  # (2, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)  # (h, w) each
    t = (xs * np.cos(angle) + ys * np.sin(angle)) / max(h, w)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)  # (h, w) in [0, 1]
    img = grey[0] + t[..., None] * (grey[1] - grey[0])  # (h, w, 3)
    blotches = rng.normal(0, 12, size=(6, 6, 3)).astype(np.float32)
    img += cv2.resize(blotches, (w, h), interpolation=cv2.INTER_CUBIC)  # (h, w, 3)
    return img.astype(np.float32)


def _shape_mask(kind: int, w: int, h: int, flip: bool) -> np.ndarray:
    """(h, w) bool mask of a shape inscribed in a w x h box, tested at pixel centres."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5  # (h, w) pixel centres
    if kind == 0:  # square: the whole box
        return np.ones((h, w), dtype=bool)
    if kind == 1:  # circle: the inscribed ellipse
        return ((xs - w / 2) / (w / 2)) ** 2 + ((ys - h / 2) / (h / 2)) ** 2 <= 1.0
    depth = (h - ys if flip else ys) / h  # (h, w): 0 at the apex, 1 at the base
    return np.abs(xs - w / 2) <= (w / 2) * depth + 0.5


def _shape_polygon(kind: int, w: int, h: int, flip: bool) -> np.ndarray:
    """(P, 2) float64 vertices, in box pixels, of the region ``_shape_mask`` paints (its pixel
    centres lie inside): see the module docstring."""
    if kind == 0:  # square
        return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    if kind == 1:  # circle: vertices on the ellipse, chords within MAX_SAGITTA of it
        radius = max(w, h) / 2
        count = max(16, int(np.ceil(np.pi / np.arccos(1 - MAX_SAGITTA / radius))))
        angle = np.arange(count) * (2 * np.pi / count)
        return np.stack([w / 2 * (1 + np.cos(angle)), h / 2 * (1 + np.sin(angle))], axis=1)
    # triangle: |x - w/2| <= (w/2) * depth + 0.5 inside the box, depth = y/h (apex up);
    # the sides reach the box's sides at depth 1 - 1/w
    knee = h * (1 - 1 / w)
    ring = np.array([[w / 2 - 0.5, 0], [w / 2 + 0.5, 0], [w, knee], [w, h], [0, h], [0, knee]],
                    dtype=np.float64)
    if flip:  # apex down: depth = (h - y)/h
        ring[:, 1] = h - ring[:, 1]
    return ring


def _segmentation(kind: int, x: int, y: int, w: int, h: int, flip: bool) -> list[list[float]]:
    """The COCO polygon segmentation of a shape drawn in the box at (x, y), 2 decimals."""
    ring = _shape_polygon(kind, w, h, flip) + np.array([x, y], dtype=np.float64)  # (P, 2)
    return [[round(float(v), 2) for v in ring.reshape(-1)]]


def _place_boxes(rng: np.random.Generator, h: int, w: int, count: int) -> list[tuple[int, int, int, int]]:
    """Up to ``count`` non-overlapping (x, y, w, h) boxes, 2 pixels apart."""
    placed: list[tuple[int, int, int, int]] = []
    longest = max(MIN_OBJECT + 1, int(0.55 * min(h, w)))
    for _ in range(count * 20):
        if len(placed) == count:
            break
        side = np.exp(rng.uniform(np.log(MIN_OBJECT), np.log(longest)))
        ratio = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))  # width / height
        bw = int(np.clip(round(side * np.sqrt(ratio)), MIN_OBJECT, w - 2))
        bh = int(np.clip(round(side / np.sqrt(ratio)), MIN_OBJECT, h - 2))
        x, y = int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1))
        if all(x + bw + 2 <= px or px + pw + 2 <= x or y + bh + 2 <= py or py + ph + 2 <= y
               for px, py, pw, ph in placed):
            placed.append((x, y, bw, bh))
    return placed


def _render(rng: np.random.Generator, h: int, w: int, count: int) -> tuple[np.ndarray, list[dict]]:
    """One uint8 BGR image and its annotations (category_id, bbox, area, iscrowd,
    segmentation) without ids."""
    img = _background(rng, h, w)  # (h, w, 3)
    anns = []
    for x, y, bw, bh in _place_boxes(rng, h, w, count):
        kind = int(rng.integers(0, len(SYNTH_CLASSES)))
        flip = bool(rng.integers(0, 2))
        mask = _shape_mask(kind, bw, bh, flip=flip)  # (bh, bw)
        colour = _COLOURS_BGR[kind] + rng.uniform(-25, 25, size=3).astype(np.float32)  # (3,)
        shade = 1.0 + rng.uniform(-0.15, 0.15) * np.linspace(-1, 1, bh, dtype=np.float32)[:, None, None]
        region = img[y:y + bh, x:x + bw]  # (bh, bw, 3) view
        region[mask] = (colour * shade * np.ones((bh, bw, 1), np.float32))[mask]
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        x1, y1 = x + int(cols[0]), y + int(rows[0])
        anns.append({"category_id": kind + 1,
                     "bbox": [x1, y1, x + int(cols[-1]) + 1 - x1, y + int(rows[-1]) + 1 - y1],
                     "area": float(mask.sum()), "iscrowd": 0,
                     "segmentation": _segmentation(kind, x, y, bw, bh, flip)})
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8), anns


@dataclass(frozen=True)
class SynthSpec:
    """The parameters of a synthetic dataset; recorded in ``synth.json`` next to it."""

    num_train: int = 200
    num_val: int = 50
    image_size: int = 256  # the longest image side; sides vary down to 5/8 of it
    seed: int = 0
    max_objects: int = 4
    empty_ratio: float = 0.1  # share of images without objects
    image_format: str = "jpg"  # or "png"

    def __post_init__(self) -> None:
        if self.num_train < 0 or self.num_val < 0:
            raise DataError(f"image counts must be >= 0, got num_train={self.num_train}, "
                            f"num_val={self.num_val}")
        if not 64 <= self.image_size <= 4096:
            raise DataError(f"image_size must be between 64 and 4096 pixels, got {self.image_size}")
        if self.max_objects < 1 or not 0.0 <= self.empty_ratio <= 1.0:
            raise DataError(f"need max_objects >= 1 and 0 <= empty_ratio <= 1, "
                            f"got {self.max_objects} and {self.empty_ratio}")
        if self.image_format not in ("jpg", "png"):
            raise DataError(f"image_format must be 'jpg' or 'png', not {self.image_format!r}")

    def to_dict(self) -> dict[str, object]:
        return {"generator_version": GENERATOR_VERSION,
                "segmentation_version": SEGMENTATION_VERSION, **asdict(self)}


def _write_split(root: Path, split: str, num_images: int, spec: SynthSpec) -> None:
    """Images under ``root/split`` and their COCO file ``root/annotations/split.json``."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(split)])  # one stream per split
    with writing(root / split, "to the dataset folder"):
        (root / split).mkdir(parents=True, exist_ok=True)
    smallest = max(64, int(round(spec.image_size * 0.625 / 8)) * 8)
    sizes = np.arange(smallest, spec.image_size + 1, 8) if spec.image_size > smallest else \
        np.array([spec.image_size])
    params = ([cv2.IMWRITE_JPEG_QUALITY, 92] if spec.image_format == "jpg"
              else [cv2.IMWRITE_PNG_COMPRESSION, 3])
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        h, w = (int(v) for v in rng.choice(sizes, size=2))
        count = 0 if rng.uniform() < spec.empty_ratio else int(rng.integers(1, spec.max_objects + 1))
        img, anns = _render(rng, h, w, count)
        file_name = f"{image_id:06d}.{spec.image_format}"
        if not cv2.imwrite(str(root / split / file_name), img, params):
            raise StorageError(f"cannot write image {root / split / file_name}: OpenCV's imwrite "
                               "failed", hint="check that the folder is writable and the disk "
                                              "not full")
        images.append({"id": image_id, "file_name": file_name, "width": w, "height": h})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **ann})
    coco = {
        "info": {"description": f"det synthetic shapes, {split} split", "version": GENERATOR_VERSION},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"}
                       for k, n in enumerate(SYNTH_CLASSES)],
    }
    ann_file = root / "annotations" / f"{split}.json"
    with writing(ann_file, "the annotation file"):
        ann_file.parent.mkdir(parents=True, exist_ok=True)
        ann_file.write_text(json.dumps(coco, indent=1) + "\n")


def _write(root: Path, spec: SynthSpec) -> SynthDataset:
    for split, count in zip(SPLITS, (spec.num_train, spec.num_val)):
        _write_split(root, split, count, spec)
    with writing(root / MARKER, "the dataset's parameters"):
        (root / MARKER).write_text(json.dumps(spec.to_dict(), indent=1, sort_keys=True) + "\n")
    log.info("wrote a synthetic dataset to %s (%d train, %d val images)",
             root, spec.num_train, spec.num_val)
    return SynthDataset(root)


def make_synthetic_dataset(
    out_dir: str | Path,
    num_train: int = SynthSpec.num_train,
    num_val: int = SynthSpec.num_val,
    image_size: int = SynthSpec.image_size,
    seed: int = SynthSpec.seed,
    *,
    max_objects: int = SynthSpec.max_objects,
    empty_ratio: float = SynthSpec.empty_ratio,
    image_format: str = SynthSpec.image_format,
) -> SynthDataset:
    """Write the dataset under ``out_dir`` (see :class:`SynthSpec` for the parameters).

    The same arguments give byte-identical files; files of an earlier, larger run stay but no
    annotation file names them.
    """
    spec = SynthSpec(num_train, num_val, image_size, seed, max_objects, empty_ratio, image_format)
    return _write(Path(out_dir), spec)


def ensure_synthetic_dataset(root: str | Path = "data/synth", **kwargs: object) -> SynthDataset:
    """The synthetic dataset at ``root``, generated first unless one with the same parameters
    (``kwargs``: :class:`SynthSpec`'s fields) is there. Runs that generate it at the same time
    are harmless: each writes a private copy and swaps it in."""
    root = Path(root)
    spec = SynthSpec(**kwargs)  # type: ignore[arg-type]
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == spec.to_dict():
        return SynthDataset(root)
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        raise DataError(f"{root} exists and is not a synthetic dataset (no {MARKER}); "
                        "refusing to overwrite it", hint="pick another directory or remove it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    _write(staging, spec)
    old = root.with_name(f".{root.name}-old-{os.getpid()}")
    if root.exists():
        os.replace(root, old)
    try:
        os.replace(staging, root)
    except OSError:  # another process swapped its copy in first
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return SynthDataset(root)
