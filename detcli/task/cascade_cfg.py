"""Training settings of Cascade R-CNN: Faster R-CNN's ``train_cfg`` with one ``rcnn`` section
per RoI stage (MMDetection 3.3's ``_base_/models/cascade-rcnn_r50_fpn.py``: the stages'
assigners ask IoU >= 0.5, 0.6 and 0.7 of a positive).

As TOML (the RPN sections as Faster R-CNN's, :mod:`detcli.task.two_stage_cfg`)::

    [[model.train_cfg.rcnn]]          # stage 0: the RPN's proposals
    assigner = { type = "MaxIoUAssigner", pos_iou_thr = 0.5, neg_iou_thr = 0.5, min_pos_iou = 0.5,
                 match_low_quality = false }
    sampler = { type = "RandomSampler", num = 512, pos_fraction = 0.25, add_gt_as_proposals = true }

    [[model.train_cfg.rcnn]]          # stage 1: stage 0's refined boxes, IoU 0.6
    ...

    [[model.train_cfg.rcnn]]          # stage 2: stage 1's refined boxes, IoU 0.7
    ...

The list's length must equal ``model.roi_head.num_stages`` (checked by the detector's config).

Cascade Mask R-CNN (a ``model.roi_head.mask_head``) adds ``mask_size`` (28) to every stage and
``mask_thr_binary`` (0.5) to ``model.test_cfg.rcnn``, as MMDetection 3.3's
``cascade-mask-rcnn_r50_fpn``; a section that has them is read as Mask R-CNN's
(:class:`RCNNMaskTrainConfig`, :class:`RCNNMaskTestConfig`), and the detector's config gives
the sections of a cascade with masks their defaults when they are not written
(:func:`with_mask_settings`).
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Field, Tag

from detcli.config.schema import Schema
from detcli.task.assigners.max_iou import MaxIoUAssignerConfig
from detcli.task.samplers.random_sampler import RandomSamplerConfig
from detcli.task.train_cfg import DenseTrainConfig
from detcli.task.two_stage_cfg import (
    ProposalConfig,
    RCNNMaskTestConfig,
    RCNNMaskTrainConfig,
    RCNNTestConfig,
    RCNNTrainConfig,
    TwoStageTestConfig,
    rpn_train_config,
)

STAGE_IOUS = (0.5, 0.6, 0.7)  # MMDetection's Cascade R-CNN: each stage's positive IoU


def cascade_stage(iou: float) -> RCNNTrainConfig:
    """One stage's sampling: positive at IoU >= ``iou`` (negative below it, no low-quality
    matches), 512 RoIs per image, a quarter positive at most, GT boxes added as proposals."""
    return RCNNTrainConfig(
        assigner=MaxIoUAssignerConfig(pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                                      match_low_quality=False, ignore_iof_thr=-1),
        sampler=RandomSamplerConfig(num=512, pos_fraction=0.25, neg_pos_ub=-1,
                                    add_gt_as_proposals=True),
        pos_weight=-1, debug=False)


def cascade_stages() -> list[RCNNTrainConfig]:
    return [cascade_stage(iou) for iou in STAGE_IOUS]


def cascade_rpn() -> DenseTrainConfig:
    """Cascade R-CNN's RPN targets: Faster R-CNN's, but anchors crossing the image border are
    dropped (``allowed_border = 0``)."""
    return rpn_train_config().model_copy(update={"allowed_border": 0})


def cascade_proposals() -> ProposalConfig:
    """Training proposals: the 2000 best of each image (Faster R-CNN keeps 1000)."""
    return ProposalConfig(nms_pre=2000, max_per_img=2000)


def _mask_section(field: str) -> Any:
    """A section's tag: "mask" when it has ``field`` (Mask R-CNN's key), else "box"."""

    def tag(value: Any) -> str:
        has = field in value if isinstance(value, dict) else hasattr(value, field)
        return "mask" if has else "box"

    return Discriminator(tag)


# a stage's train_cfg: Faster R-CNN's, or Mask R-CNN's when it has mask_size
StageTrainConfig = Annotated[
    Union[Annotated[RCNNMaskTrainConfig, Tag("mask")], Annotated[RCNNTrainConfig, Tag("box")]],
    _mask_section("mask_size")]
# test_cfg.rcnn: Faster R-CNN's, or Mask R-CNN's when it has mask_thr_binary
RCNNStageTestConfig = Annotated[
    Union[Annotated[RCNNMaskTestConfig, Tag("mask")], Annotated[RCNNTestConfig, Tag("box")]],
    _mask_section("mask_thr_binary")]


class CascadeTrainConfig(Schema):
    rpn: DenseTrainConfig = Field(default_factory=cascade_rpn)
    rpn_proposal: ProposalConfig = Field(default_factory=cascade_proposals)
    rcnn: list[StageTrainConfig] = Field(default_factory=cascade_stages, min_length=1)


class CascadeTestConfig(TwoStageTestConfig):
    rcnn: RCNNStageTestConfig = Field(  # type: ignore[assignment]
        default_factory=RCNNTestConfig)


def with_mask_settings(train_cfg: CascadeTrainConfig | None,
                       test_cfg: CascadeTestConfig) -> None:
    """A cascade with mask heads: every stage's section and ``test_cfg.rcnn`` as Mask R-CNN's,
    keeping what was written and filling ``mask_size`` / ``mask_thr_binary`` with their
    defaults where they were not (in place)."""
    if train_cfg is not None:
        train_cfg.rcnn = [stage if isinstance(stage, RCNNMaskTrainConfig)
                          else RCNNMaskTrainConfig(**dict(stage)) for stage in train_cfg.rcnn]
    if not isinstance(test_cfg.rcnn, RCNNMaskTestConfig):
        test_cfg.rcnn = RCNNMaskTestConfig(**dict(test_cfg.rcnn))


def mask_settings_without_masks(train_cfg: CascadeTrainConfig | None,
                                test_cfg: CascadeTestConfig) -> list[str]:
    """The keys of mask settings in a cascade without mask heads (they would do nothing)."""
    keys = [f"model.train_cfg.rcnn[{t}].mask_size" for t, stage in
            enumerate([] if train_cfg is None else train_cfg.rcnn)
            if isinstance(stage, RCNNMaskTrainConfig)]
    if isinstance(test_cfg.rcnn, RCNNMaskTestConfig):
        keys.append("model.test_cfg.rcnn.mask_thr_binary")
    return keys
