"""Drawing boxes with class names and scores on images (OpenCV), and prediction-vs-GT panels.

H, W: image height and width; D boxes to draw. Images are (H, W, 3) uint8 BGR, OpenCV's order;
boxes are (x1, y1, x2, y2) in pixels of that image; labels are in [0, K).

Each class has one colour (a fixed palette, cycled), so a class looks the same in the
prediction and the GT panel. Text sits in a filled box above the box's top-left corner (inside
the box when there is no room above). Nothing is drawn on the caller's array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from detcli.data.transforms.image_io import read_image
from detcli.errors import DataError, writing

# BGR, chosen to stay apart from each other and readable under white text.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255), (49, 210, 49), (255, 112, 31), (0, 190, 255), (187, 66, 226),
    (178, 178, 0), (128, 128, 255), (0, 128, 128), (255, 51, 153), (90, 90, 90),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
TITLE_HEIGHT = 22  # pixels of the title bar of a panel


def class_colour(label: int) -> tuple[int, int, int]:
    """The BGR colour of class ``label``."""
    return PALETTE[int(label) % len(PALETTE)]


def box_caption(label: int, class_names: Sequence[str], score: float | None) -> str:
    """"name 0.87" (or "name" without a score); an out-of-range label prints as its number."""
    name = class_names[label] if 0 <= label < len(class_names) else f"class {label}"
    return name if score is None else f"{name} {score:.2f}"


def _put_caption(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int],
                 font_scale: float) -> None:
    (tw, th), baseline = cv2.getTextSize(text, FONT, font_scale, 1)
    top = y - th - baseline - 2
    if top < 0:  # no room above the box: write inside it
        top = y
    cv2.rectangle(img, (x, top), (x + tw + 2, top + th + baseline + 2), colour, thickness=-1)
    cv2.putText(img, text, (x + 1, top + th + 1), FONT, font_scale, (255, 255, 255), 1, cv2.LINE_AA)


def draw_boxes(
    image: np.ndarray,
    boxes: Any,
    labels: Any,
    class_names: Sequence[str],
    scores: Any = None,
    *,
    thickness: int = 2,
    font_scale: float = 0.4,
) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with ``boxes`` (D, 4), ``labels`` (D,) and, if given,
    ``scores`` (D,) drawn; arrays or tensors."""
    out = np.ascontiguousarray(image).copy()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # (D, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)  # (D,)
    scores = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)  # (D,)
    if len(labels) != len(boxes) or (scores is not None and len(scores) != len(boxes)):
        raise ValueError(f"draw_boxes got {len(boxes)} boxes, {len(labels)} labels and "
                         f"{'no' if scores is None else len(scores)} scores")
    for i in range(len(boxes)):  # D is small: what a person can look at
        x1, y1, x2, y2 = (int(round(v)) for v in boxes[i])
        colour = class_colour(labels[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness)
        caption = box_caption(int(labels[i]), class_names, None if scores is None else scores[i])
        _put_caption(out, caption, max(x1, 0), max(y1, 0), colour, font_scale)
    return out


def titled(image: np.ndarray, title: str) -> np.ndarray:
    """``image`` with a dark title bar of TITLE_HEIGHT pixels on top."""
    bar = np.full((TITLE_HEIGHT, image.shape[1], 3), 32, dtype=np.uint8)  # (TITLE_HEIGHT, W, 3)
    cv2.putText(bar, title, (4, TITLE_HEIGHT - 7), FONT, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)  # (TITLE_HEIGHT + H, W, 3)


def side_by_side(left: np.ndarray, right: np.ndarray, *, titles: tuple[str, str] | None = None,
                 gap: int = 6) -> np.ndarray:
    """Two images next to each other, ``gap`` white pixels apart, each under its title."""
    if titles is not None:
        left, right = titled(left, titles[0]), titled(right, titles[1])
    h = max(left.shape[0], right.shape[0])
    width = left.shape[1] + gap + right.shape[1]
    canvas = np.full((h, width, 3), 255, dtype=np.uint8)  # (h, W_left + gap + W_right, 3)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] + gap:] = right
    return canvas


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Encode ``image`` by the file's extension (.png, .jpg, ...) and write it, making the
    folder; DataError naming the path when OpenCV cannot encode that format or the write fails."""
    path = Path(path)
    try:
        params = [cv2.IMWRITE_PNG_COMPRESSION, 9] if path.suffix.lower() == ".png" else []
        ok, data = cv2.imencode(path.suffix, image, params)
    except cv2.error:
        ok = False
    if not ok:
        what = f"{path.suffix!r} files" if path.suffix else "a file name without an extension"
        raise DataError(f"cannot write {path}: OpenCV cannot encode {what}",
                        hint="use a .png or .jpg file name")
    with writing(path, "image"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.tobytes())
    return path


def upscale(image: np.ndarray, min_side: int) -> tuple[np.ndarray, int]:
    """``image`` enlarged by the smallest integer factor that brings its longer side to at
    least ``min_side`` (so captions stay readable on small images), and that factor."""
    factor = max(1, -(-min_side // max(image.shape[:2])))
    if factor == 1:
        return image, 1
    h, w = image.shape[:2]
    return cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST), factor


def prediction_vs_gt(image: np.ndarray, detections: Any, gt: dict[str, Any],
                     class_names: Sequence[str], score_thr: float = 0.3,
                     min_side: int = 320) -> np.ndarray:
    """One panel pair: detections scoring at least ``score_thr`` (left), GT boxes (right).

    ``detections`` has ``boxes``, ``scores``, ``labels`` (a :class:`Detections`); ``gt`` is a
    dataset's ``get_ann_info`` (``bboxes``, ``labels``; ignore boxes are drawn grey, unlabelled).
    Images whose longer side is under ``min_side`` are enlarged by an integer factor first.
    """
    image, factor = upscale(image, min_side)
    scores = np.asarray(detections.scores.float().cpu()).reshape(-1)  # (D,)
    shown = scores >= score_thr  # (D,)
    pred_boxes = np.asarray(detections.boxes.float().cpu()).reshape(-1, 4)  # (D, 4)
    pred_boxes = pred_boxes[shown] * factor  # (D', 4) in the enlarged image
    pred = draw_boxes(image, pred_boxes, np.asarray(detections.labels.cpu())[shown], class_names,
                      scores[shown])
    gt_boxes = np.asarray(gt["bboxes"], dtype=np.float64).reshape(-1, 4) * factor  # (G, 4)
    truth = draw_boxes(image, gt_boxes, gt["labels"], class_names)
    ignore = np.asarray(gt.get("bboxes_ignore", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
    for x1, y1, x2, y2 in (ignore * factor).round().astype(int):  # (Ig, 4)
        cv2.rectangle(truth, (x1, y1), (x2, y2), (160, 160, 160), 1)
    return side_by_side(pred, truth, titles=(f"prediction >= {score_thr:g}: {int(shown.sum())}",
                                             f"ground truth: {len(gt_boxes)}"))


def panel_name(info: dict[str, Any]) -> Path:
    """The panel's file name: the image's ``file_name`` as a .png, kept inside the output folder."""
    name = Path(str(info.get("file_name", info.get("id", "image"))))
    if name.is_absolute() or ".." in name.parts:
        name = Path(name.name)
    return name.with_suffix(".png")


def show_predictions(dataset: Any, detections: Sequence[Any], out_dir: str | Path, *,
                     score_thr: float = 0.3,
                     progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """Write one prediction-vs-GT PNG per dataset image under ``out_dir`` (named after the
    image's ``file_name``, sub-folders kept); returns the files written."""
    out_dir = Path(out_dir)
    written = []
    for i, (info, dets) in enumerate(zip(dataset.img_infos, detections)):
        image = read_image(info["filename"])  # (H, W, 3) BGR
        panel = prediction_vs_gt(image, dets, dataset.get_ann_info(i), dataset.CLASSES, score_thr)
        written.append(save_image(out_dir / panel_name(info), panel))
        if progress is not None:
            progress(i + 1, len(detections))
    return written
