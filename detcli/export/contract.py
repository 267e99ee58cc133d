"""The input contract of an exported model, read from the config's test pipeline.

H x W: the network input (after resize and padding). Scales written as pairs are (w, h), as in
MMDetection's ``img_scale``; sizes are (h, w).

An exported graph starts after preprocessing. What a caller must do to an image before feeding
it -- resize rule, channel order, mean and std, padding -- is whatever the config's test
pipeline does; :class:`InputContract` collects those settings so they can be written into the
ONNX file's metadata, printed by ``det export onnx`` and used to pick the fixed input size of a
static export (:meth:`InputContract.static_size`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from detcli.errors import ConfigError


def _as_dict(step: Any) -> dict[str, Any]:
    return dict(step) if isinstance(step, dict) else step.model_dump()


def flatten_pipeline(pipeline: Sequence[Any]) -> list[dict[str, Any]]:
    """Every step as a dict, the transforms of a MultiScaleFlipAug inlined after it."""
    out: list[dict[str, Any]] = []
    for step in pipeline:
        data = _as_dict(step)
        out.append(data)
        if data.get("type") == "MultiScaleFlipAug":
            out.extend(flatten_pipeline(data.get("transforms") or []))
    return out


def _first_scale(img_scale: Any) -> tuple[int, int] | None:
    """The first (w, h) pair of an ``img_scale`` (one pair or a list of pairs)."""
    if not img_scale:
        return None
    first = img_scale if isinstance(img_scale[0], (int, float)) else img_scale[0]
    return int(first[0]), int(first[1])


@dataclass(frozen=True)
class InputContract:
    """What the exported graph expects: NCHW float32, normalised, padded at bottom/right."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in the order of the output channels
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    to_rgb: bool = False  # the pipeline turns OpenCV's BGR into RGB before normalising
    img_scale: tuple[int, int] | None = None  # (w, h) the test Resize aims at
    keep_ratio: bool = True
    size_divisor: int | None = None  # Pad: height and width rounded up to a multiple of it
    pad_size: tuple[int, int] | None = None  # Pad: a fixed (h, w)
    pad_val: float = 0.0  # the value of padded pixels (after Normalize in MMDetection order)

    @classmethod
    def from_pipeline(cls, pipeline: Sequence[Any]) -> InputContract:
        """The contract of a test pipeline (transform configs or dicts)."""
        found: dict[str, Any] = {}
        for step in flatten_pipeline(pipeline):
            kind = step.get("type")
            if kind == "MultiScaleFlipAug":
                found["img_scale"] = _first_scale(step.get("img_scale"))
            elif kind == "Resize":
                found["keep_ratio"] = bool(step.get("keep_ratio", True))
                if step.get("img_scale") and "img_scale" not in found:
                    found["img_scale"] = _first_scale(step["img_scale"])
            elif kind == "Normalize":
                found.update(mean=tuple(float(v) for v in step["mean"]),
                             std=tuple(float(v) for v in step["std"]),
                             to_rgb=bool(step.get("to_rgb", True)))
            elif kind == "Pad":
                pad_val = step.get("pad_val", 0.0)
                found.update(size_divisor=step.get("size_divisor"),
                             pad_size=tuple(step["size"]) if step.get("size") else None,
                             pad_val=float(pad_val.get("img", 0.0) if isinstance(pad_val, dict)
                                           else pad_val))
        return cls(**found)

    def round_up(self, size: int) -> int:
        """``size`` rounded up to the pipeline's ``size_divisor`` (unchanged without one)."""
        d = self.size_divisor
        return -(-size // d) * d if d else size

    def static_size(self) -> tuple[int, int]:
        """(h, w) that holds every preprocessed image: Pad's fixed size; else, with
        ``keep_ratio``, a square of the longer scale edge (a portrait image needs the long edge
        vertically, a landscape one horizontally); else the scale itself; rounded up to
        ``size_divisor``."""
        if self.pad_size is not None:
            return int(self.pad_size[0]), int(self.pad_size[1])
        if self.img_scale is None:
            raise ConfigError("cannot tell the input size from the test pipeline (no img_scale "
                              "in its Resize or MultiScaleFlipAug)",
                              hint="give the size: --input-size H W")
        w, h = self.img_scale
        if self.keep_ratio:
            side = self.round_up(max(w, h))
            return side, side
        return self.round_up(h), self.round_up(w)

    def metadata(self) -> dict[str, str]:
        """The contract as ONNX metadata entries (JSON values)."""
        return {f"det.input.{key}": json.dumps(value) for key, value in asdict(self).items()}

    def describe(self) -> list[str]:
        """Human lines for the CLI and the docs."""
        order = "BGR -> RGB, then " if self.to_rgb else "BGR kept, "
        lines = [f"layout NCHW float32; {order}(pixel - mean) / std, mean {list(self.mean)}, "
                 f"std {list(self.std)}"]
        if self.img_scale is not None:
            rule = "fit inside (keep ratio)" if self.keep_ratio else "resize to"
            lines.append(f"resize: {rule} {self.img_scale[0]} x {self.img_scale[1]} (w x h)")
        if self.pad_size is not None:
            lines.append(f"pad: bottom/right to {self.pad_size[0]} x {self.pad_size[1]} (h x w) "
                         f"with {self.pad_val:g}")
        elif self.size_divisor:
            lines.append(f"pad: bottom/right to a multiple of {self.size_divisor} with "
                         f"{self.pad_val:g} (after normalisation)")
        return lines
