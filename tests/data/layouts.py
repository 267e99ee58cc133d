"""Small COCO, VOC and YOLO folders for the ``det init`` tests, converted from ``det data synth``.

Each converter copies the synthetic images and rewrites their COCO boxes ([x, y, w, h],
pixels) into the target format: VOC XML corners (x, y, x + w, y + h), YOLO normalised
``class cx cy w h``. Image names get their split as a prefix (``train_000001.jpg``) where two
splits share one folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from detcli.data.synth import SynthDataset, make_synthetic_dataset


def synth(root: Path, num_train: int = 8, num_val: int = 4, seed: int = 1) -> SynthDataset:
    return make_synthetic_dataset(root, num_train=num_train, num_val=num_val, image_size=96, seed=seed)


def _split(data: SynthDataset, split: str) -> tuple[dict, dict[int, str]]:
    coco = json.loads(data.ann_file(split).read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return coco, names


def _objects(coco: dict, image_id: int) -> list[dict]:
    return [a for a in coco["annotations"] if a["image_id"] == image_id]


def to_voc(data: SynthDataset, root: Path, image_sets: bool = True) -> Path:
    """``root/{Annotations,JPEGImages}`` (+ ``ImageSets/Main/{train,val}.txt``)."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for split in ("train", "val"):
        coco, names = _split(data, split)
        ids = []
        for img in coco["images"]:
            stem = f"{split}_{Path(img['file_name']).stem}"
            ids.append(stem)
            shutil.copy(data.img_prefix(split) / img["file_name"], root / "JPEGImages" / f"{stem}.jpg")
            objects = "".join(
                f"<object><name>{names[a['category_id']]}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{a['bbox'][0]}</xmin><ymin>{a['bbox'][1]}</ymin>"
                f"<xmax>{a['bbox'][0] + a['bbox'][2]}</xmax><ymax>{a['bbox'][1] + a['bbox'][3]}</ymax>"
                "</bndbox></object>" for a in _objects(coco, img["id"]))
            (root / "Annotations" / f"{stem}.xml").write_text(
                f"<annotation><size><width>{img['width']}</width><height>{img['height']}</height>"
                f"<depth>3</depth></size>{objects}</annotation>")
        if image_sets:
            main = root / "ImageSets" / "Main"
            main.mkdir(parents=True, exist_ok=True)
            (main / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def _yolo_labels(coco: dict, img: dict) -> str:
    lines = []
    for a in _objects(coco, img["id"]):
        x, y, w, h = a["bbox"]
        cx, cy = (x + w / 2) / img["width"], (y + h / 2) / img["height"]
        lines.append(f"{a['category_id'] - 1} {cx:.6f} {cy:.6f} {w / img['width']:.6f} {h / img['height']:.6f}")
    return "".join(f"{line}\n" for line in lines)


def to_yolo(data: SynthDataset, root: Path, style: str = "ultralytics", names: str = "yaml",
            splits: tuple[str, ...] = ("train", "val")) -> Path:
    """A YOLO folder. ``style``: "ultralytics" (images/train, labels/train), "roboflow"
    (train/images, valid/images), "flat" (images/, labels/: every split together, no split).
    ``names``: "yaml" (data.yaml), "classes.txt" or "none"."""
    for split in splits:
        coco, _ = _split(data, split)
        folder = {"ultralytics": f"images/{split}", "flat": "images",
                  "roboflow": f"{'valid' if split == 'val' else split}/images"}[style]
        images = root / folder
        labels = root / folder.replace("images", "labels")
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for img in coco["images"]:
            stem = f"{split}_{Path(img['file_name']).stem}"
            shutil.copy(data.img_prefix(split) / img["file_name"], images / f"{stem}.jpg")
            text = _yolo_labels(coco, img)
            if text:  # YOLO: an image without objects may have no label file
                (labels / f"{stem}.txt").write_text(text)
    classes = ["square", "circle", "triangle"]
    if names == "yaml":
        (root / "data.yaml").write_text(
            "# made by the det init tests\npath: .\ntrain: images/train\nval: images/val\n"
            "nc: 3\nnames:\n" + "".join(f"  {k}: {n}\n" for k, n in enumerate(classes)))
    elif names == "classes.txt":
        (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return root
