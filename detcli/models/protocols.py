"""What the rest of det needs from a dense head, an RoI head and a detector.

N images, L levels, P candidates per image, M = ``max_per_img`` detection slots per image.

These are the only ways the engine (training, TTA), export and the analysis tools reach into
a model: they call these methods, with these typed results, and never ask ``hasattr(head,
...)``. A new head family implements its protocol; nothing outside its own files changes.

Data flow of a single-stage detector (a two-stage one runs the RPN -- a dense head -- then
the RoI head on its proposals)::

    images (N, 3, H, W) -> backbone -> neck -> L feature maps
        -> DenseHead.forward          -> DenseOutputs (per-level raw maps)
        -> DenseHead.loss             -> {"loss_*": ()}           (training)
        -> DenseHead.candidates       -> Candidates (N, P)         (predict, TTA, ONNX graph)
        -> DenseHead.predict          -> DetectionBatch (N, M)     (candidates + one NMS)
        -> DenseHead.training_rule    -> TrainingRule              (sampler, loss normaliser)
        -> DenseHead.explain_assignment -> Assignment (N, R)       (det viz assign, analyze)
        -> DenseHead.assignment_setup -> AssignmentSetup           (what those reports describe)
        -> PredictionAssigningHead.predicted_priors -> PredictedPriors (RTMDet: what its
                                         assigner ranks; the analysis' cost explanation)

The protocols are structural (``typing.Protocol``): a head satisfies one by having the
methods; nothing has to inherit from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional, Protocol, Sequence

import torch
from torch import Tensor

from detcli.structures.assignment import Assignment
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates, DenseOutputs
from detcli.structures.detections import DetectionBatch
from detcli.structures.proposals import Proposals
from detcli.structures.queries import QueryOutputs
from detcli.task.protocols import Assigner, PriorGenerator

# How a head divides its classification loss (MMDetection's ``avg_factor``): by the positives
# of the batch, or by the sampled positives plus negatives (each image counting at least one).
Normaliser = Literal["positives", "positives_and_negatives"]


@dataclass(frozen=True)
class TrainingRule:
    """How a head turns an assignment into a loss, as the head itself declares it.

    ``sampler`` is the sampler the head's loss runs (``"PseudoSampler"``: every assigned prior
    counts; ``"RandomSampler"``: a fixed number per image, the rest ignored), ``normaliser``
    what its classification loss is divided by. Tools read this instead of re-deriving it.
    """

    sampler: str
    normaliser: Normaliser


@dataclass(frozen=True)
class AssignmentSetup:
    """What a dense head's ``explain_assignment`` runs on, for the reports that describe it.

    ``prior_boxes`` makes the priors as boxes (``grid_priors(featmap_sizes)`` -> L x (R_l, 4),
    with ``strides``, ``num_base_priors`` and ``base_anchors``; a point head's points as
    stride-sized cells); ``assigner`` is the rule its loss applies
    (:class:`~detcli.task.protocols.Assigner`: its thresholds and the explanations it
    ``explains``); ``generator_key`` the head config's field that configures the priors
    (``anchor_generator``; FCOS: ``strides``); ``generator_cfg``/``assigner_cfg`` their configs
    as reports show them (``generator_cfg`` None: the field ``generator_key`` holds it);
    ``allowed_border`` the margin outside the image within which priors count (-1: all count).
    """

    prior_boxes: Any
    assigner: Assigner
    generator_key: str
    generator_cfg: Any = None
    assigner_cfg: Any = None
    allowed_border: int = -1


class DenseHead(Protocol):
    """A head that predicts at every location of every level (RetinaNet, ATSS, FCOS, RPN).

    ``num_classes`` K (1 for the RPN), ``test_cfg`` its post-processing settings,
    ``prior_generator`` its priors (the ONNX graph builds them from symbolic sizes with it),
    ``bbox_coder`` its decoder (``clip_border``). ``makes_proposals`` (a class attribute) is
    True for a head whose outputs are a second stage's proposals (RPNHead:
    ``predict_proposals``).
    """

    makes_proposals: ClassVar[bool]
    num_classes: int
    test_cfg: Any
    prior_generator: PriorGenerator
    bbox_coder: Any

    def forward(self, feats: Sequence[Tensor]) -> DenseOutputs:
        """L x (N, C, H_l, W_l) -> the raw per-level outputs."""
        ...

    def loss(self, outputs: DenseOutputs, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """Training losses of the batch; every key starts with ``loss_``."""
        ...

    def candidates(self, outputs: DenseOutputs, img_shapes: Tensor | None,
                   priors: Sequence[Tensor] | None = None,
                   static_k: bool = False) -> Candidates:
        """Boxes before NMS in network-input pixels, clipped to ``img_shapes`` (N, 2) unless
        None. ``priors`` (per level) default to the head's own; the ONNX graph passes priors
        built from symbolic sizes and ``static_k`` (see ``dense_predict``)."""
        ...

    def predict(self, outputs: DenseOutputs, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Detections padded to (N, M): ``candidates`` and one batched NMS."""
        ...

    def training_rule(self) -> TrainingRule:
        """Which sampler and which loss normaliser the head's ``loss`` uses."""
        ...

    def explain_assignment(self, outputs: DenseOutputs, images: ImageBatch,
                           targets: DetTargets,
                           generator: torch.Generator | None = None) -> Assignment:
        """Every prior's GT, label, IoU and role, from the assigner and sampler ``loss`` runs
        (``generator``: the sampler's random draws)."""
        ...

    def assignment_setup(self) -> AssignmentSetup:
        """The priors, assigner and settings ``explain_assignment`` uses (for reports)."""
        ...


@dataclass(frozen=True)
class PredictedPriors:
    """What a head whose assigner ranks priors by the head's own predictions hands that
    assigner (RTMDet): R points over all levels, N images, K classes."""

    points: Tensor  # (R, 4) x, y, stride_w, stride_h
    valid: Tensor  # (N, R) bool: the point lies on the image's padded area
    logits: Tensor  # (N, R, K) class logits
    boxes: Tensor  # (N, R, 4) decoded boxes, network-input pixels


class PredictionAssigningHead(DenseHead, Protocol):
    """A dense head whose assigner declares ``needs_predictions`` (RTMDetSepBNHead): the
    analysis reads what the head hands its assigner, and builds outputs from predictions it
    chose (a trained model's, or a stand-in's) to run the head's own assignment on.

    Inverse relation: ``predicted_priors(outputs_from_predictions(b, x, sizes), images)``
    has boxes ``b`` and logits ``x`` (tests/models/test_rtmdet_head.py)."""

    def predicted_priors(self, outputs: DenseOutputs, images: ImageBatch) -> PredictedPriors:
        """The points, valid flags, logits and decoded boxes ``loss`` assigns with."""
        ...

    def outputs_from_predictions(self, pred_boxes: Tensor, pred_logits: Tensor,
                                 featmap_sizes: Sequence[tuple[int, int]]) -> DenseOutputs:
        """Decoded boxes (N, R, 4) and class logits (N, R, K) over the points of
        ``featmap_sizes`` -> the per-level outputs ``forward`` would have made for them."""
        ...


class QueryHead(Protocol):
    """A head that predicts one object per decoder query (DETR): no priors, no NMS.

    L decoder layers, N images, Q queries, D embedding width, M ``max_per_img``. Training
    matches the queries to the GT one-to-one (a Hungarian assignment, one device -> host
    transfer per batch) instead of assigning priors, so there is no ``training_rule`` or
    ``assignment_setup``; ``match`` is what a tool reads to show that matching.
    """

    num_classes: int
    test_cfg: Any

    def forward(self, hidden_states: Tensor) -> QueryOutputs:
        """Decoder outputs (L, N, Q, D) -> class logits and normalised boxes per layer."""
        ...

    def loss(self, outputs: QueryOutputs, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """Set losses of every layer: ``loss_*`` (last layer) and ``d{i}.loss_*``."""
        ...

    def match(self, outputs: QueryOutputs, images: ImageBatch, targets: DetTargets) -> Any:
        """Every layer's queries matched to the GT (a ``HungarianMatch``: the assignment,
        layer-major, and the matched counts on the host)."""
        ...

    def candidates(self, outputs: QueryOutputs, img_shapes: Tensor) -> Candidates:
        """The top-k detections of the last layer in network-input pixels (all valid)."""
        ...

    def predict(self, outputs: QueryOutputs, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Top-k detections padded to (N, M), no NMS."""
        ...


class BBoxHead(Protocol):
    """A RoI head's box head: pooled RoI features -> K + 1 softmax logits (background last)
    and deltas, decoded by its ``bbox_coder`` (Shared2FCBBoxHead). R RoIs, P per image."""

    num_classes: int
    bbox_coder: Any  # encode(rois, boxes) / decode(rois, deltas, max_shape); clip_border
    reg_decoded_bbox: bool

    def forward(self, roi_feats: Tensor) -> tuple[Tensor, Tensor]:
        """(R, C, S, S) -> (cls_score (R, K + 1), bbox_pred (R, 4K or 4))."""
        ...

    def loss(self, cls_score: Tensor, bbox_pred: Tensor, rois: Tensor, labels: Tensor,
             label_weights: Tensor, bbox_targets: Tensor, bbox_weights: Tensor,
             avg_factor_bbox: float | Tensor | None = None) -> dict[str, Tensor]:
        ...

    def predict_boxes(self, rois: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                      img_shapes: Tensor | None) -> tuple[Tensor, Tensor]:
        """rois (N, P, 4) -> per-class boxes (N, P, K, 4), clipped to ``img_shapes`` (N, 2)
        unless None, and scores (N, P, K) without the background (predict and the ONNX
        graph, which clips by its own rule)."""
        ...


class RoIExtractor(Protocol):
    """Pools each RoI's features from the level its size picks (SingleRoIExtractor)."""

    def forward(self, feats: Sequence[Tensor], rois: Tensor,
                dense: bool | None = None) -> Tensor:
        """L maps (N, C, H_l, W_l) and rois (R, 5: image index, x1, y1, x2, y2) -> (R, C, S, S).
        ``dense`` True: every RoI pooled at every level and the right one selected (fixed
        shapes, no host sync: what the ONNX graph traces); None: dense only while exporting."""
        ...


class RoIHead(Protocol):
    """The second stage of a two-stage detector: proposals -> losses or detections."""

    num_classes: int

    def loss(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        ...

    def predict(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        ...

    def box_stages(self) -> list[tuple[RoIExtractor, BBoxHead]]:
        """(RoI extractor, box head) of each box stage (one; Cascade R-CNN's T): the ONNX
        graph reads the extractors' ``dense`` path and decodes with the last head."""
        ...

    def box_outputs(self, feats: Sequence[Tensor], rois: Tensor, clip: Any = None,
                    **extract_kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        """rois (N, P, 4) -> (the RoIs the last stage read (N, P, 4), cls_score (N, P, K + 1),
        bbox_pred (N, P, 4K or 4)); ``clip`` clips a stage's refined RoIs (multi-stage)."""
        ...

    @property
    def with_mask(self) -> bool:
        """Whether the head segments its detections (Mask R-CNN's mask branch)."""
        ...

    def predict_mask_probs(self, feats: Sequence[Tensor], dets: DetectionBatch,
                           **extract_kwargs: Any) -> Tensor:
        """dets (N, M) in network-input pixels -> the (N, M, h, w) probability mask of each
        detection's class, zeros on empty slots; only called when ``with_mask``."""
        ...


@dataclass(frozen=True)
class DetectorStages:
    """The heads a detector is made of, as it declares them (``Detector.stages``).

    ``dense_head`` predicts at every location: a single-stage detector's ``bbox_head``, or a
    two-stage one's RPN, whose outputs are the proposals of ``roi_head`` (None: one stage);
    None for a query-based detector (DETR: its ``bbox_head`` is a :class:`QueryHead`).
    ``dense_key`` is the dense head's config key; ``proposal_cfg`` the test-time proposal
    settings of a two-stage detector (``test_cfg.rpn``; None for one stage).
    """

    dense_head: Optional[DenseHead]
    dense_key: str
    roi_head: Optional[RoIHead] = None
    proposal_cfg: Any = None

    @property
    def two_stage(self) -> bool:
        """Whether an RoI head refines the dense head's proposals."""
        return self.roi_head is not None


@dataclass(frozen=True)
class DenseStageConfig:
    """Where a detector config keeps its dense head (the one that assigns priors): the head's
    config and its ``train_cfg`` section (None: ``train_cfg = false``), and their keys
    (``model.bbox_head`` / ``model.train_cfg``, or ``model.rpn_head`` / ``model.train_cfg.rpn``).
    ``two_stage``: the detector refines that head's proposals with an RoI head."""

    head: Any
    train_cfg: Any
    head_key: str
    train_key: str
    two_stage: bool


class Detector(Protocol):
    """What the engine, TTA and export call on a whole detector.

    ``num_classes`` K, ``detection_test_cfg`` its final post-processing settings (the dense
    head's ``test_cfg``, or a two-stage detector's ``test_cfg.rcnn``), ``num_classes_key``
    the config key that holds K and ``stages`` its heads (:class:`DetectorStages`).
    """

    num_classes: int
    detection_test_cfg: Any
    num_classes_key: str

    @property
    def stages(self) -> DetectorStages: ...

    def loss(self, images: ImageBatch, targets: DetTargets) -> dict[str, Tensor]:
        """Training losses; the engine sums the ``loss_*`` keys."""
        ...

    def predict_batch(self, images: ImageBatch, rescale: bool = True) -> DetectionBatch:
        """Detections padded to (N, M), boxes in original-image pixels with ``rescale``."""
        ...

    def candidates(self, images: ImageBatch) -> Candidates:
        """The boxes the final NMS would see, in network-input pixels (test-time
        augmentation merges these across views)."""
        ...
