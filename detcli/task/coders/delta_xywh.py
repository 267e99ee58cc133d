"""Box <-> delta encoding of R-CNN, as MMDetection 2.x's ``DeltaXYWHBBoxCoder``.

``...`` leading dims, broadcast between priors and boxes/deltas (priors (R, 4) against deltas
(N, R, 4) decodes a whole batch at once). Boxes are (x1, y1, x2, y2) in pixels; deltas are
(dx, dy, dw, dh), normalised by ``(delta - means) / stds``:

    dx = (gx - px) / pw,  dy = (gy - py) / ph,  dw = log(gw / pw),  dh = log(gh / ph)

where (px, py, pw, ph) and (gx, gy, gw, gh) are the centres and sizes of the prior and the
target. ``decode(priors, encode(priors, boxes)) == boxes`` (up to float error) while no clamp
applies. Both directions compute in float32 and return float32.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Optional, Sequence

import torch
from pydantic import Field
from torch import Tensor

from detcli.config.schema import Schema
from detcli.ops.boxes import ShapeLike, clip_boxes
from detcli.registry import BBOX_CODERS

PositiveFloat = Annotated[float, Field(gt=0)]
Four = Annotated[list[float], Field(min_length=4, max_length=4)]
FourPositive = Annotated[list[PositiveFloat], Field(min_length=4, max_length=4)]

WH_RATIO_CLIP = 16 / 1000  # dw, dh are clamped to +-|log(WH_RATIO_CLIP)| when decoding


class DeltaXYWHBBoxCoderConfig(Schema):
    type: Literal["DeltaXYWHBBoxCoder"] = "DeltaXYWHBBoxCoder"
    target_means: Four = [0.0, 0.0, 0.0, 0.0]
    target_stds: FourPositive = [1.0, 1.0, 1.0, 1.0]
    clip_border: bool = True  # clip decoded boxes to max_shape when one is given
    add_ctr_clamp: bool = False  # YOLOF: clamp the centre shift to +-ctr_clamp pixels
    ctr_clamp: float = Field(32, gt=0)


@BBOX_CODERS.register(DeltaXYWHBBoxCoderConfig)
class DeltaXYWHBBoxCoder:
    """Encode target boxes as deltas from priors, and decode predicted deltas back to boxes."""

    def __init__(
        self,
        *,
        target_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        target_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        clip_border: bool = True,
        add_ctr_clamp: bool = False,
        ctr_clamp: float = 32,
    ) -> None:
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        # (4,) float32 means and stds per device, made on first use: building them from the
        # tuples on every call would be a host-to-device copy inside each train step
        self._norm: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self.clip_border = clip_border
        self.add_ctr_clamp = add_ctr_clamp
        self.ctr_clamp = ctr_clamp

    def _means_stds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """The (4,) float32 means and stds on ``like``'s device, cached for eager tensors
        (while tracing, compiling or exporting they are made afresh: a traced tensor must not
        outlive its trace)."""
        traced = (type(like) is not Tensor or torch.jit.is_tracing()
                  or torch.compiler.is_compiling())
        norm = None if traced else self._norm.get(like.device)
        if norm is None:
            norm = (torch.tensor(self.means, device=like.device),
                    torch.tensor(self.stds, device=like.device))
            if not traced:
                self._norm[like.device] = norm
        return norm

    def encode(self, priors: Tensor, boxes: Tensor) -> Tensor:
        """priors (..., 4), target boxes (..., 4) -> normalised deltas (..., 4), float32."""
        priors, boxes = priors.float(), boxes.float()
        px = (priors[..., 0] + priors[..., 2]) * 0.5
        py = (priors[..., 1] + priors[..., 3]) * 0.5
        pw = priors[..., 2] - priors[..., 0]
        ph = priors[..., 3] - priors[..., 1]
        gx = (boxes[..., 0] + boxes[..., 2]) * 0.5
        gy = (boxes[..., 1] + boxes[..., 3]) * 0.5
        gw = boxes[..., 2] - boxes[..., 0]
        gh = boxes[..., 3] - boxes[..., 1]
        deltas = torch.stack([(gx - px) / pw, (gy - py) / ph,
                              torch.log(gw / pw), torch.log(gh / ph)], dim=-1)  # (..., 4)
        means, stds = self._means_stds(deltas)
        return (deltas - means) / stds

    def decode(
        self,
        priors: Tensor,
        deltas: Tensor,
        max_shape: Optional[ShapeLike] = None,
        wh_ratio_clip: float = WH_RATIO_CLIP,
    ) -> Tensor:
        """priors (..., 4), deltas (..., 4) -> boxes (..., 4), float32.

        ``max_shape``: one (h, w) for all boxes, or a Tensor (N, 2) of (h, w) per image for
        deltas (N, R, 4); boxes are clipped to it when ``clip_border``.
        """
        priors, deltas = priors.float(), deltas.float()
        means, stds = self._means_stds(deltas)
        denorm = deltas * stds + means  # (..., 4)
        dxy, dwh = denorm[..., :2], denorm[..., 2:]  # (..., 2) each
        pxy = (priors[..., :2] + priors[..., 2:]) * 0.5  # (..., 2)
        pwh = priors[..., 2:] - priors[..., :2]  # (..., 2)
        shift = pwh * dxy  # (..., 2) centre shift in pixels
        max_ratio = abs(math.log(wh_ratio_clip))
        if self.add_ctr_clamp:
            shift = shift.clamp(min=-self.ctr_clamp, max=self.ctr_clamp)
            dwh = dwh.clamp(max=max_ratio)
        else:
            dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
        gwh = pwh * dwh.exp()  # (..., 2)
        gxy = pxy + shift  # (..., 2)
        boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)  # (..., 4)
        if self.clip_border and max_shape is not None:
            boxes = clip_boxes(boxes, max_shape)
        return boxes

