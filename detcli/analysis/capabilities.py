"""What a configured head, assigner, sampler or model offers the analysis, found in one place.

The analysis (``det analyze anchors``, ``det viz assign``) works on whatever the config builds;
these functions are the only place it asks what a component can do.

Heads are asked through their protocol (:mod:`detcli.models.protocols`): the head that assigns
priors is built from the config (untrained) and its ``explain_assignment`` assigns,
``assignment_setup()`` says which priors (as boxes: FCOS's points as stride-sized cells),
assigner and ``allowed_border`` it uses, and ``training_rule()`` which sampler its loss runs.
That head is ``model.rpn_head`` (with ``model.train_cfg.rpn``) in a two-stage detector, else
``model.bbox_head`` (with ``model.train_cfg``). The lists in error hints read the registered
configs: a head *with anchors* has an ``anchor_generator``, one *with points* ``strides``; a head
*makes proposals* when its class has ``predict_proposals`` (RPNHead).

Assigners: ``needs_predictions = True`` (a class attribute) ranks priors by the model's outputs,
so nothing can show it without a trained model; ``needs_num_level_priors = True`` (ATSS, the
FCOS rule) is told how many priors each level has; ``regions(gt_boxes)`` (the FCOS rule) and
``candidates(...)`` (ATSS) explain an assignment beyond its codes.

Samplers: a budget ``num`` with ``pos_fraction`` (``num_expected_pos`` when it says so), and
``add_gt_as_proposals``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Optional

from detcli.config.schema import Schema
from detcli.errors import RegistryError
from detcli.models.detectors.two_stage import TwoStageDetector
from detcli.models.protocols import AssignmentSetup, DenseHead
from detcli.registry import HEADS
from detcli.task.samplers.pseudo_sampler import PseudoSamplerConfig
from detcli.task.two_stage_cfg import RCNNMaskTrainConfig

log = logging.getLogger(__name__)


# -- heads ------------------------------------------------------------------------------------

def anchor_heads() -> list[str]:
    """Registered head types whose config has an ``anchor_generator``."""
    return [name for name in HEADS.names() if "anchor_generator" in HEADS.config(name).model_fields]


def _head_class(name: str) -> Any:
    try:
        return HEADS.get(name)
    except RegistryError:  # a config registered without its class
        return None


def proposal_heads() -> list[str]:
    """Registered head types that make proposals (``predict_proposals``): RPNHead."""
    return [name for name in HEADS.names() if hasattr(_head_class(name), "predict_proposals")]


def assigning_heads() -> list[str]:
    """Registered head types without anchors whose config has ``strides`` (FCOSHead)."""
    return [name for name in HEADS.names() if name not in anchor_heads()
            and "strides" in HEADS.config(name).model_fields and _head_class(name) is not None]


def build_assigning_head(head_cfg: Any, train_cfg: Any) -> Optional[DenseHead]:
    """The head of ``head_cfg`` (of a resolved detector config, so its ``in_channels`` are the
    neck's) built untrained with ``train_cfg``; None when only its config is registered."""
    if _head_class(getattr(head_cfg, "type", "")) is None:
        return None
    return HEADS.build(head_cfg, train_cfg=train_cfg, test_cfg=None)


def describe_assignment(head_cfg: Any, head: Optional[DenseHead]) -> Optional[AssignmentSetup]:
    """The head's :class:`AssignmentSetup`, its generator config taken from ``head_cfg``'s
    ``anchor_generator`` when the head does not state one; None without a built head."""
    if head is None:
        return None
    setup = head.assignment_setup()
    if setup.generator_cfg is None:
        setup = replace(setup, generator_cfg=getattr(head_cfg, "anchor_generator", None))
    return setup


def sampler_config(head: DenseHead, train_cfg: Any) -> Schema:
    """The sampler the head's loss really runs (its ``training_rule()``): a head that keeps
    every prior (focal loss, ATSS) ignores ``train_cfg.sampler``."""
    if head.training_rule().sampler == "PseudoSampler":
        if train_cfg.sampler.type != "PseudoSampler":
            log.info("%s keeps every prior: train_cfg.sampler %s is not used",
                     type(head).__name__, train_cfg.sampler.type)
        return PseudoSamplerConfig()
    return train_cfg.sampler


def assigning_head(model_cfg: Any) -> tuple[Any, Any, str, str]:
    """(head config, its train_cfg or None, the head's key, the train_cfg's key): the RPN of a
    two-stage detector, else the bbox head (module docstring)."""
    train_cfg = getattr(model_cfg, "train_cfg", None)
    rpn = getattr(model_cfg, "rpn_head", None)
    if rpn is not None:
        return (rpn, None if train_cfg is None else train_cfg.rpn, "model.rpn_head",
                "model.train_cfg.rpn")
    return getattr(model_cfg, "bbox_head", None), train_cfg, "model.bbox_head", "model.train_cfg"


def num_queries(model_cfg: Any) -> Optional[int]:
    """The learned queries of a query-based detector (DETR's ``num_queries``): it has no priors
    to assign, its training matches the queries to the GT one to one. None for a detector with
    priors (anchors or points)."""
    value = getattr(model_cfg, "num_queries", None)
    return int(value) if isinstance(value, int) else None


def match_cost_names(train_cfg: Any) -> list[str]:
    """``Type(weight)`` of each match cost of a query-based detector's assigner, for messages."""
    costs = getattr(getattr(train_cfg, "assigner", None), "match_costs", None) or []
    return [f"{getattr(c, 'type', '?')}({getattr(c, 'weight', '?')})" for c in costs]


def is_two_stage(model_cfg: Any) -> bool:
    """Whether the model config has an RPN and an RoI head (a two-stage detector)."""
    return (getattr(model_cfg, "rpn_head", None) is not None
            and getattr(model_cfg, "roi_head", None) is not None)


def has_mask_head(model_cfg: Any) -> bool:
    """Whether the model config's RoI head has a mask branch (Mask R-CNN)."""
    return getattr(getattr(model_cfg, "roi_head", None), "mask_head", None) is not None


def rcnn_mask_size(model_cfg: Any) -> Optional[int]:
    """The side of the mask targets (``model.train_cfg.rcnn.mask_size``) of a Mask R-CNN config
    with a train_cfg; None otherwise."""
    train_cfg = getattr(model_cfg, "train_cfg", None)
    rcnn = getattr(train_cfg, "rcnn", None)
    if not has_mask_head(model_cfg) or not isinstance(rcnn, RCNNMaskTrainConfig):
        return None
    return int(rcnn.mask_size)


def makes_proposals(model: Any) -> bool:
    """Whether a built detector makes proposals: a two-stage one, whose ``rpn_head`` has
    ``predict_proposals``."""
    return isinstance(model, TwoStageDetector)


# -- assigners --------------------------------------------------------------------------------

def needs_predictions(assigner: Any) -> bool:
    """Whether ``assigner`` ranks priors by the model's predictions (class attribute
    ``needs_predictions``; static assigners such as MaxIoU leave it False)."""
    return bool(getattr(type(assigner), "needs_predictions", False))


def needs_level_counts(assigner: Any) -> bool:
    """Whether ``assigner.assign`` takes ``num_level_priors`` (ATSS and the FCOS rule)."""
    return bool(getattr(assigner, "needs_num_level_priors", False))


def pos_iou_thr(assigner: Any) -> Optional[float]:
    """The assigner's positive IoU threshold, None for an assigner without one."""
    value = getattr(assigner, "pos_iou_thr", None)
    return float(value) if isinstance(value, (int, float)) else None


def explains_regions(assigner: Any) -> bool:
    """Whether the assigner gives each GT's eligible regions (``regions``: the FCOS rule)."""
    return hasattr(assigner, "regions")


def lists_candidates(assigner: Any) -> bool:
    """Whether the assigner lists each GT's candidate priors (``candidates``: ATSS)."""
    return hasattr(assigner, "candidates")


# -- samplers ---------------------------------------------------------------------------------

def sampler_num(sampler: Any) -> Optional[int]:
    """The sampler's budget per image (None: it keeps every candidate)."""
    value = getattr(sampler, "num", None)
    return int(value) if value is not None else None


def sampler_pos_fraction(sampler: Any) -> Optional[float]:
    value = getattr(sampler, "pos_fraction", None)
    return float(value) if value is not None else None


def sampler_max_pos(sampler: Any) -> Optional[int]:
    """At most this many sampled positives: ``int(num * pos_fraction)`` unless the sampler
    says (``num_expected_pos``)."""
    num, fraction = sampler_num(sampler), sampler_pos_fraction(sampler)
    if num is None or fraction is None:
        return None
    return int(getattr(sampler, "num_expected_pos", int(num * fraction)))


def sampler_adds_gt(sampler: Any) -> bool:
    """Whether the sampler adds the GT boxes as proposals (``add_gt_as_proposals``)."""
    return bool(getattr(sampler, "add_gt_as_proposals", False))
