"""Region proposals: what a two-stage detector's RPN hands to its RoI head.

N images, P proposal slots per image (``max_per_img`` of the proposal config, a fixed size so
shapes do not depend on the data). Boxes are (x1, y1, x2, y2) in network-input pixels (after
resize, before any rescale to the original image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Proposals:
    boxes: Tensor  # (N, P, 4) float; zeros on padding slots
    scores: Tensor  # (N, P) float objectness in [0, 1], descending within each image; 0 on padding
    valid: Tensor  # (N, P) bool: a real proposal (the first num_valid slots of each image)

    def __len__(self) -> int:
        return self.boxes.shape[0]

    @property
    def num_valid(self) -> Tensor:
        return self.valid.sum(dim=1)  # (N,)

    def detach(self) -> Proposals:
        return Proposals(self.boxes.detach(), self.scores.detach(), self.valid)

    def to(self, device: torch.device | str) -> Proposals:
        return Proposals(self.boxes.to(device), self.scores.to(device), self.valid.to(device))
