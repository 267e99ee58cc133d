"""Running an exported model with onnxruntime, and the optional dependencies export needs.

N images, H x W the network input, M detection slots, B candidates (``--no-nms`` models).

:class:`OnnxModel` wraps an ``onnxruntime.InferenceSession`` of a file written by
``det export onnx`` and returns what PyTorch's ``predict_batch`` returns, a
:class:`~detcli.structures.detections.DetectionBatch`. It adapts to how the file was exported:
a static batch size is met by running chunks (the last one padded with blank images), a static
input size by zero padding at the bottom and right (the pipeline's own padding value), and a
``--no-nms`` model's candidates go through the same host NMS as ``predict``
(:func:`~detcli.task.postprocess.nms_to_batch`). A Mask R-CNN file's fifth output,
``mask_probs`` (N, M, 28, 28), becomes ``DetectionBatch.mask_probs``; pasting it into the
image is the caller's host step (:class:`~detcli.inference.detector.Detector` does it).
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from detcli.errors import DataError, ExportError
from detcli.ops.boxes import clip_boxes
from detcli.structures.detections import DetectionBatch
from detcli.task.postprocess import nms_to_batch

EXPORT_EXTRA = "pip install 'detcli[export]'"
EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")


def require(*packages: str) -> None:
    """ExportError naming the optional extra unless every package imports."""
    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                          f"installed; ONNX export and inference need {', '.join(packages)}",
                          hint=f"install the optional extra: {EXPORT_EXTRA}")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (what ``det export onnx`` wrote there)."""
    require("onnx")
    import onnx

    model = onnx.load(os.fspath(path), load_external_data=False)
    return {prop.key: prop.value for prop in model.metadata_props}


class OnnxModel:
    """An exported detector run by onnxruntime (CPU unless ``providers`` say otherwise)."""

    def __init__(self, path: str | os.PathLike, *, providers: list[str] | None = None) -> None:
        require("onnxruntime")
        import onnxruntime as ort

        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ExportError(f"ONNX model {self.path} does not exist")
        try:
            self.session = ort.InferenceSession(self.path,
                                                providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ExportError(f"onnxruntime cannot load {self.path}: {exc}") from None
        inputs = self.session.get_inputs()
        if len(inputs) not in (1, 2) or len(inputs[0].shape) != 4:
            raise ExportError(f"{self.path} is not a det export: it should take (N, 3, H, W) "
                              f"images, it takes {[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        self.sizes_name = inputs[1].name if len(inputs) == 2 else None  # image_sizes (N, 2)
        shape = inputs[0].shape  # ints for static axes, names (str) for dynamic ones
        self.batch_size = shape[0] if isinstance(shape[0], int) else None
        static_hw = all(isinstance(d, int) for d in shape[2:])
        self.input_size = (shape[2], shape[3]) if static_hw else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.has_nms = "num_dets" in self.output_names
        self.has_masks = "mask_probs" in self.output_names  # a mask detector's (N, M, h, w)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def meta_json(self, key: str, default: Any = None) -> Any:
        """A JSON value ``det export onnx`` stored in the file's metadata."""
        value = self.metadata.get(key)
        return default if value is None else json.loads(value)

    def fit_input(self, images: Tensor) -> Tensor:
        """Zero-pad (N, 3, h, w) at the bottom and right to a static input size."""
        if self.input_size is None:
            return images
        height, width = self.input_size
        h, w = images.shape[-2:]
        if h > height or w > width:
            raise DataError(f"a preprocessed image of {h} x {w} (h x w) does not fit the "
                            f"static input {height} x {width} of {self.path}",
                            hint="export with --dynamic-size, or with a larger --input-size")
        return F.pad(images, (0, width - w, 0, height - h))  # (N, 3, H, W)

    def run(self, images: Tensor, image_sizes: Tensor | None = None) -> list[Tensor]:
        """Raw outputs for (N, 3, H, W) float32 images, in any batch size. ``image_sizes``
        (N, 2) (h, w) before padding feeds a model exported with that input; it defaults to
        the images' full size."""
        images = images.float().cpu()
        if image_sizes is None:
            image_sizes = torch.tensor([list(images.shape[-2:])] * images.shape[0])
        image_sizes = image_sizes.to(torch.int64).cpu()  # (N, 2)
        images = self.fit_input(images)
        num_images = images.shape[0]
        step = self.batch_size or num_images
        chunks = []
        for start in range(0, num_images, step):
            chunk = images[start: start + step]  # (n, 3, H, W), n <= step
            sizes = image_sizes[start: start + step]  # (n, 2)
            filler = step - chunk.shape[0]
            if filler:  # a static batch: fill it with blank images, drop their outputs
                chunk = torch.cat([chunk, chunk.new_zeros(filler, *chunk.shape[1:])])
                sizes = torch.cat([sizes, sizes[:1].expand(filler, 2)])
            feed = {self.input_name: np.ascontiguousarray(chunk.numpy())}
            if self.sizes_name is not None:
                feed[self.sizes_name] = np.ascontiguousarray(sizes.numpy())
            outputs = self.session.run(None, feed)
            chunks.append([torch.from_numpy(o)[: step - filler] for o in outputs])
        return [torch.cat(parts) for parts in zip(*chunks)]

    def detections(self, images: Tensor, test_cfg: Any = None, *,
                   img_shapes: Tensor | None = None,
                   scale_factors: Tensor | None = None) -> DetectionBatch:
        """(N, 3, H, W) -> DetectionBatch (N, M). Boxes are clipped to ``img_shapes`` (N, 2)
        (each image's size before padding; also fed to a model with an ``image_sizes`` input)
        when given, then divided by ``scale_factors``
        (N, 4) when given -- the two steps that take PyTorch's ``predict`` to original-image
        pixels. ``test_cfg`` (a DenseTestConfig) is needed by ``--no-nms`` models only."""
        outputs = self.run(images, img_shapes)
        mask_probs = None
        if self.has_masks:
            boxes, scores, labels, num_dets, mask_probs = outputs
        elif self.has_nms:
            boxes, scores, labels, num_dets = outputs
        else:
            boxes, scores, labels = outputs  # (N, B, 4), (N, B), (N, B)
        if img_shapes is not None:
            boxes = clip_boxes(boxes, img_shapes.to(boxes))  # (N, *, 4)
        if scale_factors is not None:
            boxes = boxes / scale_factors.to(boxes)[:, None, :]  # (N, *, 4) original pixels
        if self.has_nms:
            return DetectionBatch(boxes, scores, labels.long(), num_dets.long(), mask_probs)
        if test_cfg is None:
            raise ExportError(f"{self.path} was exported with --no-nms: its candidates need the "
                              "config's test_cfg for NMS")
        return nms_to_batch(boxes, scores, labels.long(), scores > 0, test_cfg)
