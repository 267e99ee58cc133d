"""What the rest of det needs from a prior generator, an assigner and a sampler.

N images, L levels, H_l x W_l the feature map of level l, A_l priors per location, R priors,
G GT slots.

Each is a structural ``typing.Protocol``: a class satisfies one by having the attributes and
methods, nothing has to inherit from it. The capabilities are *declared* (class attributes),
so the ONNX graph and the analysis read them instead of asking ``hasattr``:

- a prior generator says whether its priors are points or boxes (``priors_are_points``) and
  builds one level's priors from (symbolic) sizes (``single_level_grid_priors``, traceable);
- an assigner says whether it needs the model's predictions (``needs_predictions``), the
  number of priors per level (``needs_num_level_priors``), its positive IoU threshold
  (``pos_iou_thr``, None without one) and which explanations it offers (``explains``:
  ``"regions"``: it has ``regions(gt_boxes)``, the FCOS rule; ``"candidates"``: it has
  ``candidates(...)``, ATSS; ``"costs"``: it has ``costs(...)``, the terms of its cost matrix
  and each GT's dynamic k, the dynamic soft-label assigner);
- a sampler says its budget per image (``num``, None: it keeps every candidate), the share of
  positives (``pos_fraction``), the most positives it keeps (``max_pos``) and whether it adds
  the GT boxes as candidates (``add_gt_as_proposals``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Protocol, Sequence

import torch
from torch import Tensor

from detcli.task.assigners.assign_result import AssignResult
from detcli.task.samplers.sampling_result import SamplingResult

class PriorGenerator(Protocol):
    """Priors on every location of every level: anchors (boxes) or points."""

    priors_are_points: ClassVar[bool]  # True: (x, y) points (FCOS); False: (x1, y1, x2, y2)
    strides: list[tuple[int, int]]  # (stride_w, stride_h) per level

    @property
    def num_levels(self) -> int: ...

    @property
    def num_base_priors(self) -> list[int]:
        """A_l, the priors per location of each level."""
        ...

    def grid_priors(self, featmap_sizes: Sequence[tuple[int, int]],
                    device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> list[Tensor]:
        """L x (H_l * W_l * A_l, 4 or 2) priors, cached per sizes."""
        ...

    def single_level_grid_priors(self, featmap_size: tuple[Any, Any], level: int,
                                 device: torch.device | str = "cpu") -> Tensor:
        """Level ``level``'s priors (H_l * W_l * A_l, 4 or 2) float32 for a feature map whose
        size may be symbolic (the ONNX graph's): uncached, traceable, the same values and
        order as ``grid_priors``."""
        ...

    def valid_flags(self, featmap_sizes: Sequence[tuple[int, int]],
                    pad_shapes: Tensor) -> list[Tensor]:
        """L x (N, H_l * W_l * A_l) bool: the priors on a location inside each image."""
        ...


class Assigner(Protocol):
    """Priors + GT -> positive / negative / ignored per prior (an :class:`AssignResult`)."""

    needs_predictions: ClassVar[bool]  # ranks priors by the model's outputs (RTMDet's)
    needs_num_level_priors: ClassVar[bool]  # ``assign`` takes ``num_level_priors``
    explains: ClassVar[frozenset[str]]  # of "regions", "candidates", "costs"
    pos_iou_thr: Optional[float]  # the positive IoU threshold; None for a rule without one

    def assign(self, priors: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
               ignore_boxes: Optional[Tensor] = None, ignore_valid: Optional[Tensor] = None,
               prior_valid: Optional[Tensor] = None, **kwargs: Any) -> AssignResult:
        """priors (R, 4) or (N, R, 4), gt_boxes (N, G, 4), gt_labels (N, G) -> over (N, R)."""
        ...


class Sampler(Protocol):
    """An assignment -> the priors that enter the loss (a :class:`SamplingResult`)."""

    num: Optional[int]  # the budget per image; None: every candidate is kept
    pos_fraction: Optional[float]  # the share of the budget positives may take; None: no budget
    add_gt_as_proposals: bool  # the GT boxes join the candidates (first)

    @property
    def max_pos(self) -> Optional[int]:
        """The most positives kept per image; None: all of them."""
        ...

    def sample(self, assign: AssignResult, priors: Tensor, gt_boxes: Tensor,
               gt_labels: Tensor,
               generator: Optional[torch.Generator] = None) -> SamplingResult: ...


class MatchingAssigner(Protocol):
    """Query scores and boxes + GT -> a one-to-one matching (DETR's ``HungarianAssigner``):
    M problems, Q queries, G GT slots, C classifier outputs; boxes in network-input pixels.
    The query heads' losses call ``match``; ``det viz assign`` reads ``cost_terms`` to show
    what each match cost contributed (:mod:`detcli.analysis.query_matching`)."""

    match_cost_cfgs: list[Any]  # the configured match costs (``type``, ``weight``), in order

    def match(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
              img_shapes: Tensor) -> Any:
        """scores (M, Q, C), boxes (M, Q, 4), gt_boxes (M, G, 4), gt_labels (M, G) (-1:
        padding), img_shapes (M, 2) -> a match whose ``result`` is the (M, Q) AssignResult."""
        ...

    def cost_terms(self, scores: Tensor, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
                   img_shapes: Tensor) -> list[Tensor]:
        """Each weighted match cost, (M, Q, G), in the configured order; they sum to the
        matrix ``match`` solves."""
        ...
