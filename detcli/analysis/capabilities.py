"""What a configured head, assigner, sampler or model offers the analysis, found in one place.

The analysis (``det analyze anchors``, ``det viz assign``) works on whatever the config builds;
these functions are the only place it asks what a component can do, and they ask through
typed, declared attributes -- never ``hasattr`` or ``getattr`` with a default:

- heads (:class:`~detcli.models.protocols.DenseHead`): the head that assigns priors is built
  from the config (untrained) and its ``explain_assignment`` assigns, ``assignment_setup()``
  says which priors (as boxes: FCOS's points as stride-sized cells), assigner, config field
  (``generator_key``) and ``allowed_border`` it uses, and ``training_rule()`` which sampler
  its loss runs. A head class declares ``makes_proposals`` (RPNHead);
- the detector config's ``dense_stage()`` says which head that is (``model.rpn_head`` with
  ``model.train_cfg.rpn`` in a two-stage detector, else ``model.bbox_head`` with
  ``model.train_cfg``), a built detector's ``stages`` whether it makes proposals;
- assigners and samplers (:mod:`detcli.task.protocols`): ``needs_predictions`` (then the
  head is a :class:`~detcli.models.protocols.PredictionAssigningHead`: RTMDet),
  ``needs_num_level_priors``, ``pos_iou_thr``, ``explains``; ``num``, ``pos_fraction``,
  ``max_pos``, ``add_gt_as_proposals`` (PseudoSampler: None, None, None, False).

The lists in error hints read the registered configs: a head *with anchors* has an
``anchor_generator``, one *with points* ``strides``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Optional, cast

from detcli.config.schema import Schema
from detcli.errors import RegistryError
from detcli.models.protocols import (
    AssignmentSetup,
    DenseHead,
    DenseStageConfig,
    Detector,
    PredictionAssigningHead,
)
from detcli.registry import ASSIGNERS, HEADS, PRIOR_GENERATORS
from detcli.task.protocols import Assigner, Sampler
from detcli.task.samplers.pseudo_sampler import PseudoSamplerConfig
from detcli.task.two_stage_cfg import RCNNMaskTrainConfig

log = logging.getLogger(__name__)


# -- heads ------------------------------------------------------------------------------------

def _makes_anchor_boxes(name: str) -> bool:
    """Whether head type ``name``'s default ``anchor_generator`` makes boxes (its generator
    declares ``priors_are_points = False``); RTMDet's field of that name holds points."""
    field = HEADS.config(name).model_fields.get("anchor_generator")
    if field is None:
        return False
    default = field.get_default(call_default_factory=True)
    if not isinstance(default, Schema):  # no default generator: the config must name one
        return True
    return not PRIOR_GENERATORS.get(default.type).priors_are_points


def anchor_heads() -> list[str]:
    """Registered head types whose config's ``anchor_generator`` makes anchor boxes."""
    return [name for name in HEADS.names() if _makes_anchor_boxes(name)]


def _head_class(name: str) -> Any:
    try:
        return HEADS.get(name)
    except RegistryError:  # a config registered without its class
        return None


def proposal_heads() -> list[str]:
    """Registered head types whose class declares ``makes_proposals``: RPNHead."""
    return [name for name in HEADS.names()
            if _head_class(name) is not None and _head_class(name).makes_proposals]


def assigning_heads() -> list[str]:
    """Registered head types without anchors whose config has ``strides`` (FCOSHead).
    RTMDetSepBNHead's points are under MMDetection's ``anchor_generator`` field, so it is not
    listed here."""
    return [name for name in HEADS.names() if name not in anchor_heads()
            and "strides" in HEADS.config(name).model_fields and _head_class(name) is not None]


def build_assigning_head(head_cfg: Any, train_cfg: Any) -> Optional[DenseHead]:
    """The head of ``head_cfg`` (of a resolved detector config, so its ``in_channels`` are the
    neck's) built untrained with ``train_cfg``; None when only its config is registered."""
    if _head_class(head_cfg.type) is None:
        return None
    return HEADS.build(head_cfg, train_cfg=train_cfg, test_cfg=None)


def describe_assignment(head_cfg: Any, head: Optional[DenseHead]) -> Optional[AssignmentSetup]:
    """The head's :class:`AssignmentSetup`, its generator config read from the field of
    ``head_cfg`` the head names (``generator_key``) when the head does not state one; None
    without a built head."""
    if head is None:
        return None
    setup = head.assignment_setup()
    if setup.generator_cfg is None:
        setup = replace(setup, generator_cfg=getattr(head_cfg, setup.generator_key))
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
    """(head config, its train_cfg or None, the head's key, the train_cfg's key): what the
    detector config's ``dense_stage()`` declares (module docstring)."""
    stage: DenseStageConfig = model_cfg.dense_stage()
    return stage.head, stage.train_cfg, stage.head_key, stage.train_key


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


def ranks_by_predictions(model_cfg: Any) -> bool:
    """Whether the config's dense head assigns its priors by the model's own predictions: its
    assigner's class declares ``needs_predictions`` (RTMDet's; read from the registry, nothing
    built). False for a query-based detector (DETR: no priors) and ``train_cfg = false``."""
    _, train_cfg, _, _ = assigning_head(model_cfg)
    if num_queries(model_cfg) is not None or train_cfg is None:
        return False
    return bool(ASSIGNERS.get(train_cfg.assigner.type).needs_predictions)


def is_two_stage(model_cfg: Any) -> bool:
    """Whether the model config refines its dense head's proposals with an RoI head."""
    stage: DenseStageConfig = model_cfg.dense_stage()
    return stage.two_stage


def has_mask_head(model_cfg: Any) -> bool:
    """Whether the model config's RoI head has a mask branch (Mask R-CNN)."""
    return getattr(getattr(model_cfg, "roi_head", None), "mask_head", None) is not None


def rcnn_mask_sizes(model_cfg: Any) -> list[Optional[int]]:
    """The side of each RoI stage's mask targets (``model.train_cfg.rcnn.mask_size``; a
    cascade's ``rcnn[t].mask_size``, one per stage) of a config with a mask head and a
    train_cfg; None for a stage without (every stage of a config without a mask head)."""
    train_cfg = getattr(model_cfg, "train_cfg", None)
    rcnn = getattr(train_cfg, "rcnn", None)
    sections = rcnn if isinstance(rcnn, list) else [rcnn]
    masks = has_mask_head(model_cfg)
    return [int(s.mask_size) if masks and isinstance(s, RCNNMaskTrainConfig) else None
            for s in sections]


def makes_proposals(model: Detector) -> bool:
    """Whether a built detector makes proposals: its ``stages`` have an RoI head to feed."""
    return model.stages.two_stage


# -- assigners --------------------------------------------------------------------------------

def needs_predictions(assigner: Assigner) -> bool:
    """Whether ``assigner`` ranks priors by the model's predictions (nothing can show it
    without a trained model; static assigners such as MaxIoU declare False)."""
    return assigner.needs_predictions


def needs_level_counts(assigner: Assigner) -> bool:
    """Whether ``assigner.assign`` takes ``num_level_priors`` (ATSS and the FCOS rule)."""
    return assigner.needs_num_level_priors


def pos_iou_thr(assigner: Assigner) -> Optional[float]:
    """The assigner's positive IoU threshold, None for an assigner without one."""
    value = assigner.pos_iou_thr
    return None if value is None else float(value)


def explains_regions(assigner: Assigner) -> bool:
    """Whether the assigner gives each GT's eligible regions (``regions``: the FCOS rule)."""
    return "regions" in assigner.explains


def lists_candidates(assigner: Assigner) -> bool:
    """Whether the assigner lists each GT's candidate priors (``candidates``: ATSS)."""
    return "candidates" in assigner.explains


def explains_costs(assigner: Assigner) -> bool:
    """Whether the assigner gives the terms of its cost matrix and each GT's dynamic k
    (``costs``: the dynamic soft-label assigner)."""
    return "costs" in assigner.explains


def prediction_head(head: DenseHead) -> PredictionAssigningHead:
    """A head whose assigner ``needs_predictions``, as the
    :class:`~detcli.models.protocols.PredictionAssigningHead` it is: such a head hands its
    assigner its own predictions and builds outputs from given ones
    (tests/test_protocols.py checks every registered head with such an assigner)."""
    return cast(PredictionAssigningHead, head)


# -- samplers ---------------------------------------------------------------------------------

def sampler_num(sampler: Sampler) -> Optional[int]:
    """The sampler's budget per image (None: it keeps every candidate)."""
    return None if sampler.num is None else int(sampler.num)


def sampler_pos_fraction(sampler: Sampler) -> Optional[float]:
    """The share of the budget positives may take (None: no budget)."""
    return None if sampler.pos_fraction is None else float(sampler.pos_fraction)


def sampler_max_pos(sampler: Sampler) -> Optional[int]:
    """At most this many sampled positives per image (None: every positive)."""
    return None if sampler.max_pos is None else int(sampler.max_pos)


def sampler_adds_gt(sampler: Sampler) -> bool:
    """Whether the sampler adds the GT boxes as proposals (``add_gt_as_proposals``)."""
    return bool(sampler.add_gt_as_proposals)
