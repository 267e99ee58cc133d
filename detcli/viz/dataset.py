"""What ``det viz dataset`` shows: a dataset's images after its pipeline, with their GT boxes
and, when the pipeline loads them (``LoadAnnotations(with_mask=True)``), their instance masks.

H, W: the network input of one image (padding included); G GT boxes, I ignore boxes; K classes.
Boxes and masks are drawn where the model would see them: after Resize, RandomFlip, RandomCrop
and Pad, in network-input pixels (:mod:`detcli.analysis.pipeline_view` runs the config's
pipeline without its formatting steps). A mask is filled in its class colour and outlined
(:func:`detcli.viz.draw.draw_masks`), under the boxes. Augmentations are random; image ``k`` of the sample is prepared with
``np.random`` seeded to ``seed + k``, so a seed gives the same pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from detcli.analysis.pipeline_view import PipelineView, run_pipeline
from detcli.data.build import build_dataset
from detcli.errors import ConfigError, DetError
from detcli.viz.canvas import draw_ignore_boxes, image_grid
from detcli.viz.draw import draw_boxes, draw_masks, save_image, titled


@dataclass
class DatasetSample:
    """One image of the dataset after the pipeline."""

    index: int  # into the dataset
    view: PipelineView
    class_names: tuple[str, ...]

    @property
    def title(self) -> str:
        flip = f", flip {self.view.flip_direction}" if self.view.flip else ""
        h, w = self.view.img_shape
        return f"{Path(self.view.filename).name} {w}x{h}{flip}"

    def draw(self) -> np.ndarray:
        """(TITLE_HEIGHT + H, W, 3) uint8 BGR: the image with its GT masks (if loaded) and
        boxes (class colours and names, :mod:`detcli.viz.draw`), ignore regions grey, under a
        title."""
        v = self.view
        picture = v.image if v.gt_masks is None else draw_masks(v.image, v.gt_masks, v.gt_labels)
        picture = draw_boxes(picture, v.gt_boxes, v.gt_labels, self.class_names)  # a copy
        draw_ignore_boxes(picture, v.ignore_boxes)
        return titled(picture, self.title)

    def to_dict(self) -> dict[str, Any]:
        v = self.view
        return {
            "index": self.index, "file": v.filename, "ori_shape": list(v.ori_shape),
            "img_shape": list(v.img_shape), "pad_shape": list(v.pad_shape),
            "scale_factor": [round(float(s), 6) for s in v.scale_factor], "flip": v.flip,
            "flip_direction": v.flip_direction,
            "boxes": [[round(float(c), 3) for c in box] for box in v.gt_boxes],
            "labels": [int(label) for label in v.gt_labels],
            "classes": [self.class_names[int(label)] for label in v.gt_labels],
            "ignore_boxes": [[round(float(c), 3) for c in box] for box in v.ignore_boxes],
            "mask_areas": (None if v.gt_masks is None
                           else [int(m.sum()) for m in v.gt_masks]),  # pixels, network input
        }


def pick_indices(length: int, num: int, seed: int) -> list[int]:
    """``num`` distinct indices of ``length``, drawn with ``seed``, ascending (all when fewer)."""
    if num >= length:
        return list(range(length))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(length, size=num, replace=False))


def sample_dataset(cfg: Any, split: str = "train", num: int = 8, seed: int = 0,
                   indices: Optional[Sequence[int]] = None) -> list[DatasetSample]:
    """``num`` images of ``cfg.data.<split>`` (a DetConfig) after that split's pipeline, or the
    images at ``indices``."""
    if num < 1:
        raise DetError(f"--num must be at least 1, got {num}")
    ds_cfg = cfg.data.split(split)
    if ds_cfg is None:
        raise ConfigError(f"the config has no data.{split} dataset")
    if not ds_cfg.pipeline:
        raise ConfigError(f"data.{split}.pipeline is empty: there is nothing to show")
    dataset = build_dataset(ds_cfg.model_copy(update={"pipeline": []}), on_bad=cfg.data.on_bad_image)
    if len(dataset) == 0:
        raise DetError(f"data.{split} ({dataset.source}) has no images")
    chosen = list(indices) if indices is not None else pick_indices(len(dataset), num, seed)
    samples = []
    for k, idx in enumerate(chosen):
        view = run_pipeline(ds_cfg.pipeline, dataset.pipeline_input(idx), seed=seed + k)
        samples.append(DatasetSample(idx, view, tuple(dataset.CLASSES)))
    return samples


@dataclass
class DatasetPictures:
    """What ``det viz dataset`` reports: the samples of ``split`` and the files
    :func:`write_samples` wrote (one per sample, or one grid holding them all)."""

    split: str
    samples: Sequence[DatasetSample]
    paths: list[Path]
    grid: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``det viz dataset --json``: each image names the picture it is in."""
        files = [str(p) for p in self.paths] if not self.grid else [str(self.paths[0])] * len(self.samples)
        return {"split": self.split, "out": [str(p) for p in self.paths],
                "images": [{**s.to_dict(), "picture": f} for s, f in zip(self.samples, files)]}


def write_samples(samples: Sequence[DatasetSample], out_dir: str | Path,
                  grid: bool = False) -> list[Path]:
    """One PNG per sample (``NNN_<image stem>.png``, NNN its place in the sample), or one
    ``grid.png`` holding them all -> the paths written."""
    out_dir = Path(out_dir)
    pictures = [s.draw() for s in samples]
    if grid:
        path = out_dir / "grid.png"
        save_image(path, image_grid(pictures))
        return [path]
    paths = []
    for k, (sample, picture) in enumerate(zip(samples, pictures)):
        path = out_dir / f"{k:03d}_{Path(sample.view.filename).stem}.png"
        save_image(path, picture)
        paths.append(path)
    return paths
