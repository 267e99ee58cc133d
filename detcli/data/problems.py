"""What can be wrong with a dataset's annotations, found once and shared by datasets and ``det data check``.

A, annotations (boxes) of a dataset; I, images. Boxes are (x1, y1, x2, y2) in absolute pixels
of the original image.

Every finding is a :class:`DataProblem` naming its file and annotation. Its ``severity`` says
what the dataset does with it:

- ``"error"``: the data is wrong (NaN coordinates, non-positive width or height, a box outside
  its image, an annotation pointing at an unknown image or category, an unreadable file). With
  ``on_bad="stop"`` (the default) the dataset raises :class:`~detcli.errors.DataError`; with
  ``on_bad="skip"`` it drops the whole image (an image with a missing box would teach the model
  that the object is background) and lists the problem.
- ``"warning"``: legal but unusable, dropped with a count as MMDetection does (a box narrower or
  lower than 1 pixel, or a COCO ``area`` <= 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal

import numpy as np

from detcli.text import plural

Severity = Literal["error", "warning"]

# A box may overhang its image by this many pixels before it counts as outside: annotation
# tools round (COCO exports carry x + w = width + 0.01), and VOC's 1-based coordinates reach
# x2 = width.
OUTSIDE_TOLERANCE = 1.0

# Problem kinds, one code each (the ``kind`` of a DataProblem and a column of the check report).
NAN_BOX = "nan_box"
NON_POSITIVE_BOX = "non_positive_box"
BOX_OUTSIDE = "box_outside"
TINY_BOX = "tiny_box"
UNKNOWN_IMAGE = "unknown_image"
UNKNOWN_CATEGORY = "unknown_category"
BAD_ANNOTATION = "bad_annotation"
MISSING_FILE = "missing_file"
UNREADABLE_IMAGE = "unreadable_image"
TRUNCATED_IMAGE = "truncated_image"
SIZE_MISMATCH = "size_mismatch"
MISNAMED_IMAGE = "misnamed_image"  # a PNG named .jpg: it loads (by content), a warning
NO_BOXES = "no_boxes"  # a dataset without a single GT box: nothing to learn or measure


@dataclass
class DataProblem:
    """One thing wrong with a dataset: its kind, the file, the annotation and what is wrong."""

    kind: str
    file: str  # the annotation file (COCO json, VOC xml, YOLO txt) or the image file
    message: str
    ann_id: str | None = None  # "annotation 17", "object 2", "line 3"
    image: str | None = None  # the image's file name, relative to img_prefix
    severity: Severity = "error"
    image_index: int | None = None  # index into the dataset's full image list; None if unknown

    def __str__(self) -> str:
        where = ", ".join(p for p in (self.ann_id, f"image {self.image}" if self.image else None) if p)
        return f"{self.file}: {where + ': ' if where else ''}{self.message}"

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "image_index"}


@dataclass
class BoxFindings:
    """Per-box verdicts of :func:`find_box_problems`; all masks are (A,) bool."""

    nan: np.ndarray
    non_positive: np.ndarray
    outside: np.ndarray
    tiny: np.ndarray  # legal but dropped; never set where an error mask is set

    @property
    def error(self) -> np.ndarray:
        return self.nan | self.non_positive | self.outside


def find_box_problems(
    boxes: np.ndarray,
    image_sizes: np.ndarray,
    area: np.ndarray | None = None,
    tolerance: float = OUTSIDE_TOLERANCE,
) -> BoxFindings:
    """Classify every box at once.

    Args:
        boxes: (A, 4) float, x1 y1 x2 y2 pixels.
        image_sizes: (A, 2) float, (width, height) of each box's image; NaN where unknown
            (such boxes are never "outside").
        area: (A,) float, the annotation's own area (COCO); None when the format has none.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # (A, 4)
    widths = boxes[:, 2] - boxes[:, 0]  # (A,)
    heights = boxes[:, 3] - boxes[:, 1]  # (A,)
    nan = ~np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        non_positive = ~nan & ((widths <= 0) | (heights <= 0))
        limits = np.concatenate([image_sizes, image_sizes], axis=1)  # (A, 4): w, h, w, h
        low = (boxes[:, :2] < -tolerance).any(axis=1)
        high = (boxes[:, 2:] > limits[:, 2:] + tolerance).any(axis=1)
        outside = ~nan & ~non_positive & (low | high)
        tiny = (widths < 1) | (heights < 1)
        if area is not None:
            tiny |= ~(np.asarray(area, dtype=np.float64) > 0)
    tiny &= ~(nan | non_positive | outside)
    return BoxFindings(nan=nan, non_positive=non_positive, outside=outside, tiny=tiny)


def box_problem(kind: str, box: np.ndarray, image_size: np.ndarray) -> tuple[str, Severity]:
    """The message and severity for one box flagged by :func:`find_box_problems`."""
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = f"[{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
    if kind == NAN_BOX:
        return f"box {shown} has NaN or infinite coordinates", "error"
    if kind == NON_POSITIVE_BOX:
        return f"box {shown} (x1 y1 x2 y2) has non-positive width or height", "error"
    if kind == BOX_OUTSIDE:
        w, h = (float(v) for v in image_size)
        return f"box {shown} lies outside its {w:g}x{h:g} image", "error"
    return f"box {shown} is under 1 pixel wide or high (or has area <= 0); dropped", "warning"


def box_findings_to_problems(
    findings: BoxFindings,
    boxes: np.ndarray,
    image_sizes: np.ndarray,
    describe: Callable[[int], tuple[str, str | None, str | None, int | None]],
) -> list[DataProblem]:
    """One DataProblem per flagged box. ``describe(j)`` gives (file, ann_id, image, image_index)."""
    problems: list[DataProblem] = []
    for kind, mask in ((NAN_BOX, findings.nan), (NON_POSITIVE_BOX, findings.non_positive),
                       (BOX_OUTSIDE, findings.outside), (TINY_BOX, findings.tiny)):
        for j in np.flatnonzero(mask):  # only the flagged boxes, usually none
            message, severity = box_problem(kind, boxes[j], image_sizes[j])
            file, ann_id, image, image_index = describe(int(j))
            problems.append(DataProblem(kind, file, message, ann_id, image, severity, image_index))
    return problems


def first_errors(problems: list[DataProblem], limit: int = 5) -> str:
    """A DataError message body: the first ``limit`` errors and how many more there are."""
    errors = [p for p in problems if p.severity == "error"]
    lines = [str(p) for p in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"... and {plural(len(errors) - limit, 'more problem')}")
    return "\n".join(lines)
