"""Detector outputs.  N images, M detection slots per image.

``DetectionBatch`` is the padded form the model and the ONNX graph produce (fixed M, a valid
count per image); ``Detections`` is one image's kept detections. Boxes are (x1, y1, x2, y2) in
pixels of the original image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Detections:
    boxes: Tensor  # (D, 4) float
    scores: Tensor  # (D,) float, after sigmoid/softmax, descending
    labels: Tensor  # (D,) int64 in [0, K)

    def __len__(self) -> int:
        return self.boxes.shape[0]

    def to(self, device: torch.device | str) -> Detections:
        return Detections(self.boxes.to(device), self.scores.to(device), self.labels.to(device))


@dataclass
class DetectionBatch:
    boxes: Tensor  # (N, M, 4) float; slots past num_dets are zero
    scores: Tensor  # (N, M) float; slots past num_dets are zero
    labels: Tensor  # (N, M) int64; slots past num_dets are -1
    num_dets: Tensor  # (N,) int64

    def unbind(self) -> list[Detections]:
        counts = self.num_dets.tolist()
        return [
            Detections(self.boxes[i, :c], self.scores[i, :c], self.labels[i, :c])
            for i, c in enumerate(counts)
        ]
