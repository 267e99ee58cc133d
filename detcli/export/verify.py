"""Checking an exported model against the PyTorch model it came from, on new inputs.

N images per batch, D1 detections of PyTorch and D2 of onnxruntime for one image.

For each batch, PyTorch's ``predict_batch(ImageBatch.from_tensor(x), rescale=False)`` and the
ONNX model's detections (both in network-input pixels, both clipped to the input tensor) are
compared image by image. A PyTorch detection is matched to an ONNX one of the same label whose
corners all lie within ``box`` pixels and whose score lies within ``score``; matching is
greedy, highest PyTorch score first. The report gives the largest box and score differences
of the matched pairs and lists every detection left without a partner. One exception: a
detection within ``score`` of the score threshold may exist on one side only (float error
decides which side of the threshold it falls on); those are counted as borderline. A mask
detector's matched pairs also compare their (h, w) mask probabilities (``DetectionBatch.
mask_probs``, before pasting): the largest absolute difference must be within ``mask``.

A check that matched no detection compared nothing (a graph that drops every box would pass
it), so it fails too, unless the caller says an empty result is expected (``allow_empty``,
``det export onnx --allow-empty-verify``: an untrained model, images without objects).

The inputs must not be the tracing input: a graph that froze the tracing run's kept boxes
would pass on it. :mod:`detcli.export.verify_inputs` makes new ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from detcli.errors import ExportError
from detcli.models.introspect import detection_test_cfg
from detcli.structures.batch import ImageBatch
from detcli.structures.detections import DetectionBatch, Detections

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tolerance:
    box: float = 0.05  # pixels, per corner coordinate
    score: float = 1e-3
    mask: float = 1e-3  # mask probabilities of matched detections (Mask R-CNN)


@dataclass
class VerifyReport:
    """What :func:`verify_onnx` found over every batch."""

    tolerance: Tolerance
    shapes: list[tuple[int, ...]] = field(default_factory=list)  # (N, 3, H, W) of each batch
    num_reference: int = 0  # PyTorch detections compared
    num_exported: int = 0  # ONNX detections compared
    num_matched: int = 0
    num_borderline: int = 0  # unmatched, but within the tolerance of the score threshold
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    num_masks_compared: int = 0  # matched pairs whose mask probabilities were compared
    max_mask_diff: float = 0.0
    mismatches: list[str] = field(default_factory=list)
    allow_empty: bool = False  # a check that compared nothing passes (module docstring)

    @property
    def compared_nothing(self) -> bool:
        """No detection was matched: the outputs agree only in being empty."""
        return self.num_matched == 0

    @property
    def ok(self) -> bool:
        return not self.mismatches and (self.allow_empty or not self.compared_nothing)

    def _verdict(self) -> str:
        if self.mismatches:
            return f"kept detections differ ({len(self.mismatches)} problem(s)):"
        if not self.compared_nothing:
            return "kept detections match"
        if self.allow_empty:
            return "no detections to compare on either side (allowed by --allow-empty-verify)"
        return "nothing compared: neither side kept a detection, so the check proves nothing"

    def lines(self) -> list[str]:
        """A human summary, one fact per line."""
        shapes = ", ".join("x".join(map(str, s)) for s in self.shapes)
        out = [f"onnxruntime vs PyTorch on {len(self.shapes)} new batch(es): {shapes}",
               f"detections: PyTorch {self.num_reference}, ONNX {self.num_exported}, "
               f"matched {self.num_matched}"
               + (f", {self.num_borderline} borderline at the score threshold"
                  if self.num_borderline else ""),
               f"max abs box difference {self.max_box_diff:.3g} px (tolerance "
               f"{self.tolerance.box:g}), max abs score difference {self.max_score_diff:.3g} "
               f"(tolerance {self.tolerance.score:g})",
               ]
        if self.num_masks_compared:
            out.append(f"masks of {self.num_masks_compared} matched detections: max abs "
                       f"probability difference {self.max_mask_diff:.3g} (tolerance "
                       f"{self.tolerance.mask:g})")
        out.append(self._verdict())
        out += [f"  {m}" for m in self.mismatches[:10]]
        if len(self.mismatches) > 10:
            out.append(f"  ... and {len(self.mismatches) - 10} more")
        return out

    def raise_if_failed(self) -> None:
        """ExportError listing the mismatches, or saying that nothing was compared."""
        if self.mismatches:
            raise ExportError("the exported model disagrees with PyTorch beyond tolerance:\n"
                              + "\n".join(f"  {m}" for m in self.mismatches[:10]),
                              hint="run with --debug; check for unsupported ops or a model "
                                   "whose outputs depend on values frozen at export")
        if not self.ok:
            num_images = sum(shape[0] for shape in self.shapes)
            raise ExportError(f"the export check compared nothing: PyTorch and onnxruntime kept "
                              f"no detection on the {num_images} verification image(s), so a "
                              "graph that drops every box would pass too",
                              hint="point the config's data.test img_prefix at images the model "
                                   "detects objects in, or pass --allow-empty-verify if no "
                                   "detection is expected (an untrained model)")


def _describe(det: Detections, index: int) -> str:
    box = ", ".join(f"{v:.1f}" for v in det.boxes[index].tolist())
    return f"label {int(det.labels[index])} score {float(det.scores[index]):.4f} box [{box}]"


def match_image(reference: Detections, exported: Detections, tol: Tolerance, score_thr: float,
                where: str, report: VerifyReport) -> list[tuple[int, int]]:
    """Match one image's detections (module docstring) and add the outcome to ``report``;
    -> the matched (PyTorch index, ONNX index) pairs."""
    report.num_reference += len(reference)
    report.num_exported += len(exported)
    box_diff = (reference.boxes[:, None, :].float()
                - exported.boxes[None, :, :].float()).abs().amax(-1)  # (D1, D2)
    score_diff = (reference.scores[:, None].float() - exported.scores[None, :].float()).abs()
    fits = ((reference.labels[:, None] == exported.labels[None, :])
            & (box_diff <= tol.box) & (score_diff <= tol.score))  # (D1, D2)
    cost = torch.where(fits, box_diff, torch.full_like(box_diff, float("inf")))  # (D1, D2)
    taken = torch.zeros(len(exported), dtype=torch.bool)
    pairs: list[tuple[int, int]] = []
    unmatched_ref = []
    for i in range(len(reference)):  # verification only: D1 <= max_per_img
        row = torch.where(taken, torch.full_like(cost[i], float("inf")), cost[i])  # (D2,)
        j = int(row.argmin()) if len(exported) else -1
        if j < 0 or not torch.isfinite(row[j]):
            unmatched_ref.append(i)
            continue
        taken[j] = True
        pairs.append((i, j))
        report.num_matched += 1
        report.max_box_diff = max(report.max_box_diff, float(box_diff[i, j]))
        report.max_score_diff = max(report.max_score_diff, float(score_diff[i, j]))
    unmatched_out = [j for j in range(len(exported)) if not taken[j]]
    for side, det, indices in (("PyTorch", reference, unmatched_ref),
                               ("ONNX", exported, unmatched_out)):
        for k in indices:
            if float(det.scores[k]) <= score_thr + tol.score:
                report.num_borderline += 1
            else:
                other = "ONNX" if side == "PyTorch" else "PyTorch"
                report.mismatches.append(f"{where}: {side} detection {_describe(det, k)} has no "
                                         f"{other} counterpart")
    return pairs


def compare_masks(reference: Tensor, exported: Tensor, pairs: Sequence[tuple[int, int]],
                  tol: Tolerance, where: str, report: VerifyReport) -> None:
    """One image's mask probabilities, PyTorch's (M1, h, w) and ONNX's (M2, h, w), compared
    over the matched ``pairs`` into ``report``."""
    for i, j in pairs:
        diff = float((reference[i].float() - exported[j].float()).abs().max())
        report.num_masks_compared += 1
        report.max_mask_diff = max(report.max_mask_diff, diff)
        if diff > tol.mask:
            report.mismatches.append(f"{where}: the mask of PyTorch detection {i} differs from "
                                     f"its ONNX counterpart's by {diff:.3g} (tolerance "
                                     f"{tol.mask:g})")


def compare_batches(reference: DetectionBatch, exported: DetectionBatch, tol: Tolerance,
                    score_thr: float, shape: Sequence[int], report: VerifyReport) -> None:
    """Compare two DetectionBatch (N, M) image by image into ``report``."""
    if reference.num_dets.shape != exported.num_dets.shape:
        report.mismatches.append(f"batch {'x'.join(map(str, shape))}: PyTorch returned "
                                 f"{reference.num_dets.shape[0]} images, ONNX "
                                 f"{exported.num_dets.shape[0]}")
        return
    if (reference.mask_probs is None) != (exported.mask_probs is None):
        have = "PyTorch" if reference.mask_probs is not None else "ONNX"
        report.mismatches.append(f"batch {'x'.join(map(str, shape))}: only {have} returned "
                                 "mask probabilities")
        return
    images = zip(reference.unbind(), exported.unbind())
    for i, (ref, out) in enumerate(images):
        where = f"image {i} of batch {'x'.join(map(str, shape))}"
        pairs = match_image(ref.to("cpu"), out.to("cpu"), tol, score_thr, where, report)
        if reference.mask_probs is not None and exported.mask_probs is not None:
            compare_masks(reference.mask_probs[i].cpu(), exported.mask_probs[i].cpu(), pairs,
                          tol, where, report)


@torch.no_grad()
def verify_onnx(model: nn.Module, onnx_model: Any, batches: Sequence[Tensor], *,
                tolerance: Tolerance = Tolerance(), allow_empty: bool = False) -> VerifyReport:
    """Run PyTorch and ``onnx_model`` (an :class:`~detcli.export.runtime.OnnxModel`) on each
    (N, 3, H, W) batch and compare (module docstring)."""
    model.eval()
    test_cfg = detection_test_cfg(model)
    # detections scoring near the threshold may fall on either side; DETR's top-k has none
    score_thr = float(test_cfg.score_thr) if "score_thr" in type(test_cfg).model_fields else 0.0
    report = VerifyReport(tolerance=tolerance, allow_empty=allow_empty)
    for batch in batches:
        shape = tuple(batch.shape)
        report.shapes.append(shape)
        reference = model.predict_batch(ImageBatch.from_tensor(batch), rescale=False)
        exported = onnx_model.detections(batch, test_cfg)
        compare_batches(reference, exported, tolerance, score_thr, shape, report)
    for line in report.lines():
        log.debug("%s", line)
    return report
