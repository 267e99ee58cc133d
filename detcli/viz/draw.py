"""Drawing boxes with class names and scores on images (OpenCV), and prediction-vs-GT panels.

H, W: image height and width; D boxes to draw. Images are (H, W, 3) uint8 BGR, OpenCV's order;
boxes are (x1, y1, x2, y2) in pixels of that image; labels are in [0, K); instance masks are
(D, H, W) bool over that image.

A mask (:func:`draw_masks`) is a fill in its class colour at ``MASK_ALPHA`` over the image
(``round((1 - a) * pixel + a * colour)``) and a one-pixel contour in the full colour on the
mask's own boundary pixels: exactly the mask's pixels change. Masks are drawn under the boxes
and captions.

Each class has one colour (a fixed palette, cycled), so a class looks the same in the
prediction and the GT panel. Text sits in a filled box above the box's top-left corner (inside
the box when there is no room above). Nothing is drawn on the caller's array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from detcli.data.masks_io import NoMasks
from detcli.data.transforms.image_io import read_image
from detcli.errors import DataError, writing
from detcli.structures.detections import Detections
from detcli.structures.mask_rle import decode_masks
from detcli.structures.masks import segmentation_to_bitmap

# BGR, chosen to stay apart from each other and readable under white text.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255), (49, 210, 49), (255, 112, 31), (0, 190, 255), (187, 66, 226),
    (178, 178, 0), (128, 128, 255), (0, 128, 128), (255, 51, 153), (90, 90, 90),
)
FONT = cv2.FONT_HERSHEY_SIMPLEX
TITLE_HEIGHT = 22  # pixels of the title bar of a panel
MASK_ALPHA = 0.5  # weight of the class colour in a mask's fill


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


def draw_masks(image: np.ndarray, masks: Any, labels: Any, *,
               alpha: float = MASK_ALPHA) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) with ``masks`` (D, H, W) bool filled in the colour of
    ``labels`` (D,) and outlined (module docstring); pixels outside every mask are unchanged."""
    out = np.ascontiguousarray(image).copy()
    masks = np.asarray(masks, dtype=bool).reshape(-1, *out.shape[:2])  # (D, H, W)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)  # (D,)
    if len(masks) != len(labels):
        raise ValueError(f"draw_masks got {len(masks)} masks and {len(labels)} labels")
    for mask, label in zip(masks, labels):  # D is small: what a person can look at
        if not mask.any():
            continue
        colour = class_colour(int(label))
        blended = (out[mask].astype(np.float32) * (1 - alpha)
                   + alpha * np.asarray(colour, dtype=np.float32))  # (P, 3)
        out[mask] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)  # (P, 3)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 1)
    return out


def detection_masks(detections: Detections, height: int, width: int) -> np.ndarray | None:
    """(D, H, W) bool masks of ``detections`` (bitmaps, or decoded RLE); None without masks."""
    if detections.masks is not None:
        return np.asarray(detections.masks.cpu(), dtype=bool)
    if detections.mask_rles is not None:
        return decode_masks(detections.mask_rles, height, width)
    return None


def gt_masks(segmentations: Any, height: int, width: int) -> np.ndarray | None:
    """(G, H, W) bool of a dataset's ``get_ann_masks`` (COCO segmentations); None when the
    dataset has no masks. An annotation without a segmentation gets an empty mask."""
    if isinstance(segmentations, NoMasks):
        return None
    masks = np.zeros((len(segmentations), height, width), dtype=bool)
    for k, segm in enumerate(segmentations):
        if isinstance(segm, (list, dict)):
            masks[k] = segmentation_to_bitmap(segm, height, width).astype(bool)
    return masks


def draw_detections(image: np.ndarray, detections: Detections, class_names: Sequence[str],
                    *, thickness: int = 2, font_scale: float = 0.4) -> np.ndarray:
    """A copy of ``image`` with every detection's mask (when it has one), box, class name and
    score."""
    labels = detections.labels.cpu().numpy()  # (D,)
    masks = detection_masks(detections, *image.shape[:2])
    if masks is not None:
        image = draw_masks(image, masks, labels)
    return draw_boxes(image, detections.boxes.float().cpu().numpy(), labels, class_names,
                      detections.scores.float().cpu().numpy(), thickness=thickness,
                      font_scale=font_scale)


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


def _enlarged(masks: np.ndarray, factor: int) -> np.ndarray:
    """(D, H, W) masks -> (D, H * factor, W * factor), each pixel a factor x factor block (the
    nearest-neighbour enlargement :func:`upscale` gives the image)."""
    return masks if factor == 1 else masks.repeat(factor, axis=1).repeat(factor, axis=2)


def prediction_vs_gt(image: np.ndarray, detections: Detections, gt: dict[str, Any],
                     class_names: Sequence[str], score_thr: float = 0.3,
                     min_side: int = 320, gt_instance_masks: np.ndarray | None = None
                     ) -> np.ndarray:
    """One panel pair: detections scoring at least ``score_thr`` (left), GT boxes (right).

    ``detections`` is a :class:`Detections` (its masks drawn when it has them); ``gt`` is a
    dataset's ``get_ann_info`` (``bboxes``, ``labels``; ignore boxes are drawn grey,
    unlabelled), ``gt_instance_masks`` (G, H, W) bool the GT boxes' masks, if any. Images whose
    longer side is under ``min_side`` are enlarged by an integer factor first.
    """
    masks = detection_masks(detections, *image.shape[:2])  # (D, H, W) or None
    image, factor = upscale(image, min_side)
    scores = np.asarray(detections.scores.float().cpu()).reshape(-1)  # (D,)
    shown = scores >= score_thr  # (D,)
    labels = np.asarray(detections.labels.cpu()).reshape(-1)[shown]  # (D',)
    pred_boxes = np.asarray(detections.boxes.float().cpu()).reshape(-1, 4)  # (D, 4)
    pred_boxes = pred_boxes[shown] * factor  # (D', 4) in the enlarged image
    pred = image if masks is None else draw_masks(image, _enlarged(masks[shown], factor), labels)
    pred = draw_boxes(pred, pred_boxes, labels, class_names, scores[shown])
    gt_boxes = np.asarray(gt["bboxes"], dtype=np.float64).reshape(-1, 4) * factor  # (G, 4)
    truth = image
    if gt_instance_masks is not None:
        truth = draw_masks(image, _enlarged(gt_instance_masks, factor), gt["labels"])
    truth = draw_boxes(truth, gt_boxes, gt["labels"], class_names)
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
    image's ``file_name``, sub-folders kept); returns the files written. Detections with masks
    are drawn with them, and then the GT's masks too (``dataset.get_ann_masks``)."""
    out_dir = Path(out_dir)
    written = []
    for i, (info, dets) in enumerate(zip(dataset.img_infos, detections)):
        image = read_image(info["filename"])  # (H, W, 3) BGR
        truth_masks = (gt_masks(dataset.get_ann_masks(i), *image.shape[:2])
                       if dets.has_masks else None)
        panel = prediction_vs_gt(image, dets, dataset.get_ann_info(i), dataset.CLASSES, score_thr,
                                 gt_instance_masks=truth_masks)
        written.append(save_image(out_dir / panel_name(info), panel))
        if progress is not None:
            progress(i + 1, len(detections))
    return written
