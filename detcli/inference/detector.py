"""``Detector``: a trained detector as a function from images to detections.

D detections of one image, K classes, N images in a batch. ``Detector(image) -> Detections``
with boxes (x1, y1, x2, y2) in pixels of the original image, scores descending, labels in
[0, K) naming ``detector.classes[label]``. An image is a file path, an (H, W, 3) uint8 BGR
array (OpenCV's layout), or a list of them (-> a list of Detections). Preprocessing is the
config's test pipeline (:mod:`detcli.inference.preprocess`); the model runs in PyTorch
(:meth:`Detector.from_checkpoint`) or in onnxruntime (:meth:`Detector.from_onnx`), and both
give the same detections within float tolerance (an export with ``--dynamic-size
--image-sizes``; see docs/export.md for the others)::

    from detcli import Detector
    detector = Detector.from_checkpoint("presets/retinanet_tiny_synth.toml", "epoch_12.pth")
    # or a checkpoint alone: det's own (it keeps its config) or mmdet://NAME (its det preset)
    detector = Detector.from_checkpoint("mmdet://retinanet_r50_fpn_1x_coco")
    dets = detector("image.jpg")
    for box, score, label in zip(dets.boxes, dets.scores, dets.labels):
        print(detector.classes[label], float(score), box.tolist())

A backend turns a preprocessed :class:`~detcli.structures.batch.ImageBatch` into a
:class:`~detcli.structures.detections.DetectionBatch` (N images, M slots) on the CPU, boxes in
original-image pixels: PyTorch's ``predict_batch(rescale=True)``, or the ONNX graph's
network-input boxes clipped to each image's resized size and divided by its scale factors --
the two steps ``predict`` takes.

A mask detector (Mask R-CNN) also gives ``DetectionBatch.mask_probs`` (N, M, 28, 28); the
Detector keeps the detections above ``score_thr`` and pastes their masks into the original
image (:func:`~detcli.models.roi_heads.mask_paste.paste_masks`, thresholded at the config's
``test_cfg.rcnn.mask_thr_binary``): ``Detections.masks`` (D, H, W) bool, None for a box-only
detector.

``score_thr`` drops detections scoring at or below it (by default ``DEFAULT_SCORE_THR``, 0.3,
the same as ``det predict --score-thr``; None keeps all), on top of the model's own
``test_cfg.score_thr`` (which already cut candidates before NMS): raising it keeps fewer,
lowering it below the model's threshold keeps nothing more.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, Sequence, Union, overload

import torch
from torch import nn

from detcli.config.loader import load_config
from detcli.engine.checkpoint_config import config_from_checkpoint
from detcli.engine.device import resolve_device
from detcli.engine.tester import load_test_checkpoint
from detcli.errors import ExportError
from detcli.export.contract import InputContract
from detcli.export.runtime import OnnxModel
from detcli.inference.defaults import DEFAULT_SCORE_THR
from detcli.inference.preprocess import ImageInput, Preprocessor, inference_pipeline
from detcli.models.build import build_detector
from detcli.models.roi_heads.mask_paste import paste_masks
from detcli.models.introspect import (
    config_num_classes,
    config_test_cfg,
    detection_test_cfg,
    num_classes_of,
)
from detcli.structures.batch import ImageBatch
from detcli.structures.detections import DetectionBatch, Detections
from detcli.task.two_stage_cfg import RCNNMaskTestConfig

log = logging.getLogger(__name__)

ConfigLike = Union[str, os.PathLike, Any]  # a config file, a LoadedConfig or a DetConfig


class Backend(Protocol):
    name: str

    def __call__(self, batch: ImageBatch) -> DetectionBatch: ...


def _to_cpu(dets: DetectionBatch) -> DetectionBatch:
    probs = None if dets.mask_probs is None else dets.mask_probs.cpu()
    return DetectionBatch(dets.boxes.cpu(), dets.scores.cpu(), dets.labels.cpu(),
                          dets.num_dets.cpu(), probs)


def mask_threshold(model_cfg: Any) -> float:
    """Where a pasted mask probability counts as foreground: a Mask R-CNN config's
    ``test_cfg.rcnn.mask_thr_binary``; 0.5 (unused) for a box-only model."""
    rcnn = config_test_cfg(model_cfg)
    return rcnn.mask_thr_binary if isinstance(rcnn, RCNNMaskTestConfig) else 0.5


class TorchBackend:
    """A PyTorch detector in eval mode on ``device``."""

    name = "pytorch"

    def __init__(self, model: nn.Module, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @property
    def test_cfg(self) -> Any:
        return detection_test_cfg(self.model)

    def __call__(self, batch: ImageBatch) -> DetectionBatch:
        with torch.inference_mode():
            dets = self.model.predict_batch(batch.to(self.device), rescale=True)
        return _to_cpu(dets)


class OnnxBackend:
    """An exported model run by onnxruntime; ``test_cfg`` serves ``--no-nms`` exports."""

    name = "onnxruntime"

    def __init__(self, model: OnnxModel, test_cfg: Any = None) -> None:
        self.model = model
        self.test_cfg = test_cfg

    def __call__(self, batch: ImageBatch) -> DetectionBatch:
        img_shapes = batch.img_shapes.float()  # (N, 2) as (h, w)
        return self.model.detections(batch.tensor, self.test_cfg, img_shapes=img_shapes,
                                     scale_factors=batch.scale_factors)


def as_config(config: ConfigLike) -> Any:
    """The validated root config of a path, a ``LoadedConfig`` or a config object."""
    if isinstance(config, (str, os.PathLike)):
        return load_config(Path(config)).cfg
    return getattr(config, "cfg", config)


def resolve_classes(cfg: Any, trained: Sequence[str] | None, num_classes: int) -> list[str]:
    """Class names for K labels: the checkpoint's (``meta.classes``), else a ``classes``
    setting of the config's datasets (test, val, train), else ``class_0`` ... ``class_{K-1}``."""
    candidates = [trained]
    for split in ("test", "val", "train"):
        dataset = cfg.data.split(split)
        candidates.append(getattr(dataset, "classes", None) if dataset is not None else None)
    for names in candidates:
        if names is not None and len(names) == num_classes:
            return [str(n) for n in names]
    if trained is not None:
        log.warning("the checkpoint names %d classes but the model has %d; using class_0 ...",
                    len(trained), num_classes)
    return [f"class_{k}" for k in range(num_classes)]


class Detector:
    """Images in, :class:`Detections` out; see the module docstring."""

    def __init__(self, *, backend: Backend, preprocess: Preprocessor, classes: Sequence[str],
                 score_thr: float | None = DEFAULT_SCORE_THR, batch_size: int = 1,
                 mask_thr_binary: float = 0.5) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.backend = backend
        self.preprocess = preprocess
        self.classes = list(classes)
        self.score_thr = score_thr
        self.batch_size = batch_size
        self.mask_thr_binary = mask_thr_binary

    def __repr__(self) -> str:
        return (f"Detector(backend={self.backend.name!r}, classes={self.classes}, "
                f"score_thr={self.score_thr})")

    @classmethod
    def from_checkpoint(cls, config: ConfigLike, checkpoint: str | os.PathLike | None = None,
                        device: str | None = "cpu", score_thr: float | None = DEFAULT_SCORE_THR,
                        batch_size: int = 1) -> Detector:
        """The config's model with ``checkpoint``'s weights, run by PyTorch on ``device``
        (None: CUDA when available). A checkpoint that does not fit the config is a
        CheckpointError. ``checkpoint`` is a file or ``mmdet://NAME``; given alone
        (``from_checkpoint("mmdet://NAME")``, ``from_checkpoint("latest.pth")``), its config is
        the one it keeps or its zoo entry's det preset
        (:func:`~detcli.engine.checkpoint_config.config_from_checkpoint`)."""
        if checkpoint is None:
            checkpoint, cfg = config, config_from_checkpoint(config).cfg
        else:
            cfg = as_config(config)
        model = build_detector(cfg.model)
        report = load_test_checkpoint(model, checkpoint)
        classes = resolve_classes(cfg, report.meta.get("classes"), num_classes_of(model))
        return cls(backend=TorchBackend(model, resolve_device(device)),
                   preprocess=Preprocessor.from_config(cfg), classes=classes,
                   score_thr=score_thr, batch_size=batch_size,
                   mask_thr_binary=mask_threshold(cfg.model))

    @classmethod
    def from_onnx(cls, config: ConfigLike, onnx_path: str | os.PathLike,
                  score_thr: float | None = DEFAULT_SCORE_THR, batch_size: int = 1,
                  providers: list[str] | None = None) -> Detector:
        """A file written by ``det export onnx``, run by onnxruntime. ``config`` gives the
        preprocessing; it must be the config the file was exported from: its class count, class
        names (when the config sets ``classes``) and test pipeline are checked against the
        file's metadata (an ExportError lists what differs)."""
        cfg = as_config(config)
        model = OnnxModel(onnx_path, providers=providers)
        pipeline = inference_pipeline(cfg)
        _check_metadata(model, cfg, InputContract.from_pipeline(pipeline).metadata())
        num_classes = int(config_num_classes(cfg.model))
        classes = resolve_classes(cfg, model.meta_json("det.classes"), num_classes)
        return cls(backend=OnnxBackend(model, config_test_cfg(cfg.model)),
                   preprocess=Preprocessor(pipeline), classes=classes,
                   score_thr=score_thr, batch_size=batch_size,
                   mask_thr_binary=mask_threshold(cfg.model))

    @overload
    def __call__(self, images: ImageInput) -> Detections: ...

    @overload
    def __call__(self, images: list[ImageInput]) -> list[Detections]: ...

    def __call__(self, images: Any) -> Any:
        if isinstance(images, (list, tuple)):
            return self.predict(images)
        return self.predict([images])[0]

    def predict(self, images: Sequence[ImageInput]) -> list[Detections]:
        """One :class:`Detections` per image, in order, ``batch_size`` images per model run."""
        found: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            batch = self.preprocess(list(images[start: start + self.batch_size]))
            dets = self.backend(batch)
            for i, image_dets in enumerate(dets.unbind()):
                keep = self._keep(image_dets)  # (D,) bool
                found.append(self._with_masks(image_dets.select(keep), dets, i, keep,
                                              batch.ori_shapes[i]))
        return found

    def _keep(self, dets: Detections) -> torch.Tensor:
        """(D,) bool: the detections scoring above ``score_thr`` (all without one)."""
        if self.score_thr is None:
            return torch.ones(len(dets), dtype=torch.bool)
        return dets.scores > self.score_thr

    def _with_masks(self, kept: Detections, batch: DetectionBatch, i: int, keep: torch.Tensor,
                    ori_shape: Sequence[int]) -> Detections:
        """``kept`` with its masks pasted into the (H, W) original image, when the model
        predicts masks (only the kept detections are pasted)."""
        if batch.mask_probs is None:
            return kept
        probs = batch.mask_probs[i, :len(keep)][keep]  # (D', h, w)
        size = (int(ori_shape[0]), int(ori_shape[1]))
        return replace(kept, masks=paste_masks(probs, kept.boxes, size, self.mask_thr_binary))


def config_class_names(cfg: Any) -> list[str] | None:
    """The class names a config's datasets set (test, val, train: the first that does)."""
    for split in ("test", "val", "train"):
        dataset = cfg.data.split(split)
        names = getattr(dataset, "classes", None) if dataset is not None else None
        if names:
            return [str(n) for n in names]
    return None


def _check_metadata(model: Any, cfg: Any, contract: dict[str, str]) -> None:
    """ExportError when the ONNX file was exported with another class count, other class names
    (when the config names its classes) or another input pipeline."""
    problems = []
    exported_k = model.meta_json("det.num_classes")
    config_k = config_num_classes(cfg.model)
    if exported_k is not None and exported_k != config_k:
        problems.append(f"num_classes: {exported_k} in the file, {config_k} in the config")
    exported_names, config_names = model.meta_json("det.classes"), config_class_names(cfg)
    if exported_names is not None and config_names is not None and exported_names != config_names:
        problems.append(f"classes: {exported_names} in the file, {config_names} in the config")
    for key, value in contract.items():
        stored = model.metadata.get(key)
        if stored is not None and json.loads(stored) != json.loads(value):
            problems.append(f"{key.removeprefix('det.input.')}: {stored} in the file, "
                            f"{value} in the config")
    if problems:
        raise ExportError(f"{model.path} was exported from another config:\n"
                          + "\n".join(f"  {p}" for p in problems),
                          hint="pass the config the model was exported with")
