"""Tiny COCO annotation files for the dataset tests, written to a tmp_path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def coco_dict() -> dict[str, Any]:
    """Three images (100x80, 60x50, 40x40), non-contiguous category ids 7, 1, 3.

    Image 10 holds a "c" box, an "a" box and a crowd "b" region; image 20 one "b" box;
    image 30 nothing.
    """
    return {
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 20, "file_name": "b.jpg", "width": 60, "height": 50},
            {"id": 30, "file_name": "c.jpg", "width": 40, "height": 40},
        ],
        "categories": [{"id": 7, "name": "c"}, {"id": 1, "name": "a"}, {"id": 3, "name": "b"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 6], "area": 30, "iscrowd": 0},
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [50, 10, 40, 30], "area": 900, "iscrowd": 1},
            {"id": 4, "image_id": 20, "category_id": 3, "bbox": [1.5, 2.5, 10, 20], "area": 200, "iscrowd": 0},
        ],
    }


def write_coco(tmp_path: Path, data: Any, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path
