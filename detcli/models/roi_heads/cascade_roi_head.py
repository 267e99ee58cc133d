"""Cascade R-CNN's RoI head (Cai and Vasconcelos 2018; MMDetection 3.3's ``CascadeRoIHead``):
T box stages, each refining the boxes of the one before, each trained on stricter positives.

N images, P proposal slots per image, S sampled slots per image (a stage's ``sampler.num``), K
classes, T ``num_stages``.

Stage t has its own RoI extractor and box head (``bbox_roi_extractor.t``, ``bbox_head.t``:
MMDetection's state-dict names) and its own ``train_cfg.rcnn[t]`` (assigner, sampler,
``pos_weight``); each box head has its own coder (MMDetection's stds shrink stage by stage: the
later stages regress smaller corrections).

Training (``loss``)::

    boxes_0 = the RPN's proposals
    for t in 0 .. T-1:
        samples_t = sample boxes_t against the GT with stage t's assigner and sampler
                    (StandardRoIHead.sample: GT boxes prepended, positives first, S slots)
        losses "s{t}.loss_cls", "s{t}.loss_bbox" (times stage_loss_weights[t]), "s{t}.acc"
        boxes_{t+1} = samples_t's RoIs regressed by stage t (no gradient): the class read is
                    the GT class on positives, the best foreground score elsewhere; boxes
                    clipped to the image; the GT boxes the sampler added that came out
                    positive are dropped (``valid`` False), as MMDetection's ``refine_bboxes``

Inference (``predict``): the proposals go through every stage, each regressing the boxes the
next one pools (each RoI by its best foreground class); the final boxes are the last stage's
regression of the boxes it pooled, their scores the softmax of the T stages' class logits
averaged (MMDetection 3.3 averages the logits, then the last head's softmax), then
:func:`~detcli.models.roi_heads.standard_roi_head.rcnn_detections` (score threshold, NMS per
class) as Faster R-CNN's.

With ``mask_head`` (Cascade Mask R-CNN, MMDetection 3.3's mask branch of ``CascadeRoIHead``):
one mask head per stage (``mask_head.t``; a single config is built once per stage, or a list
gives one per stage), and ``mask_roi_extractor`` one extractor for every stage (without it the
box extractors pool the masks' RoIs too, MMDetection's ``share_roi_extractor``). Training adds
``s{t}.loss_mask`` (times ``stage_loss_weights[t]``): stage t's mask head on stage t's sampled
positives, as Mask R-CNN's branch (:meth:`StandardRoIHead.mask_loss_of`). Every stage's mask
RoIs are pooled in one extractor call (the extractors are one config, without parameters, so
they pool the same features; one host sync instead of T). At test time the final detections'
boxes (network-input pixels) are pooled once and every stage's mask head segments them; a
detection's mask probability is the mean over the stages of the sigmoid of its class channel
(MMDetection 3.3's ``predict_mask``: ``merge_aug_masks`` of the stages' sigmoids).

The stages reuse :class:`~detcli.models.roi_heads.standard_roi_head.StandardRoIHead` for
sampling, pooling and the mask loss: ``stages[t]`` is a StandardRoIHead over
``bbox_roi_extractor[t]`` and ``bbox_head[t]`` (and ``mask_head[t]``) with
``train_cfg.rcnn[t]``. The views are held in a tuple, not registered as modules: the
parameters belong to (and move, save and load with) the ModuleLists.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Literal, Sequence, Union

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, derive_or_check
from detcli.errors import ConfigError, DetError
from detcli.models.channels import RoIHeadSchema, connect_head
from detcli.models.protocols import BBoxHead
from detcli.models.roi_heads.mask_branch import segment_detections, with_mask_probs
from detcli.models.roi_heads.roi_extractor import check_pooled_size
from detcli.models.roi_heads.rois import RoISamples, batch_rois
from detcli.models.roi_heads.standard_roi_head import (
    StandardRoIHead,
    fpn_roi_extractor,
    rcnn_detections,
    trim_padding,
)
from detcli.ops.boxes import clip_boxes
from detcli.registry import (
    BBOX_HEADS,
    MASK_HEADS,
    ROI_EXTRACTORS,
    ROI_HEADS,
    BBoxHeadConfig,
    MaskHeadConfig,
    RoIExtractorConfig,
)
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.detections import DetectionBatch
from detcli.structures.proposals import Proposals
from detcli.task.two_stage_cfg import RCNNMaskTrainConfig, RCNNTestConfig, RCNNTrainConfig

STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)  # MMDetection's Cascade R-CNN


def stage_loss_weights() -> list[float]:
    return list(STAGE_LOSS_WEIGHTS)


class CascadeRoIHeadConfig(RoIHeadSchema):
    """``bbox_roi_extractor`` is one config, built once per stage (MMDetection's single-dict
    form); ``bbox_head`` lists one box head per stage. Cascade Mask R-CNN adds ``mask_head``
    (one config built once per stage, or a list of one per stage) and ``mask_roi_extractor``
    (one config built once per stage; None: each stage pools with its box extractor)."""

    type: Literal["CascadeRoIHead"] = "CascadeRoIHead"
    num_stages: int = Field(3, ge=1)
    stage_loss_weights: list[float] = Field(default_factory=stage_loss_weights)
    bbox_roi_extractor: RoIExtractorConfig = Field(default_factory=fpn_roi_extractor)
    bbox_head: list[BBoxHeadConfig] = Field(min_length=1)
    mask_roi_extractor: Maybe[RoIExtractorConfig] = None
    mask_head: Maybe[Union[MaskHeadConfig, list[MaskHeadConfig]]] = None

    def mask_heads(self) -> list[Any]:
        """Each stage's mask head config ([] without a mask branch): a single config stands
        for every stage."""
        if self.mask_head is None:
            return []
        if isinstance(self.mask_head, list):
            return list(self.mask_head)
        return [self.mask_head] * self.num_stages

    @model_validator(mode="after")
    def _per_stage(self) -> CascadeRoIHeadConfig:
        per_stage = [("stage_loss_weights", self.stage_loss_weights),
                     ("bbox_head", self.bbox_head)]
        if isinstance(self.mask_head, list):
            per_stage.append(("mask_head", self.mask_head))
        for key, values in per_stage:
            if len(values) != self.num_stages:
                raise ValueError(
                    f"model.roi_head.{key} has {len(values)} entries but "
                    f"model.roi_head.num_stages is {self.num_stages}: give one per stage")
        classes = [getattr(head, "num_classes", None) for head in self.bbox_head]
        if len(set(classes)) > 1:
            raise ValueError(
                f"model.roi_head.bbox_head[*].num_classes are {classes}: every stage classifies "
                "the same classes, so set each of "
                + ", ".join(f"model.roi_head.bbox_head.{t}.num_classes"
                            for t in range(len(classes))) + " to the same K")
        mask_classes = {getattr(head, "num_classes", None) for head in self.mask_heads()}
        if mask_classes and mask_classes != set(classes[:1]):
            raise ValueError(
                f"model.roi_head.mask_head num_classes {sorted(mask_classes)} differ from the "
                f"box heads' {classes[0]}: the masks are of the boxes' classes, so set them "
                "equal")
        for stage, head in enumerate(self.bbox_head):
            check_pooled_size(self.bbox_roi_extractor, head, "bbox_roi_extractor",
                              f"bbox_head[{stage}]", "the box heads read")
        if self.mask_head is not None:
            self._check_mask_pooling()
        return self

    def _check_mask_pooling(self) -> None:
        """Every stage's mask head reads what the mask extractor (or the box one) pools."""
        extractor_key = "mask_roi_extractor" if self.mask_roi_extractor is not None \
            else "bbox_roi_extractor"
        extractor = self.mask_roi_extractor or self.bbox_roi_extractor
        for stage, head in enumerate(self.mask_heads()):
            where = "mask_head" if not isinstance(self.mask_head, list) else f"mask_head[{stage}]"
            check_pooled_size(extractor, head, extractor_key, where, "the mask heads read")

    def connect(self, in_channels: int, source: str, where: str) -> None:
        """The extractor (one config, built per stage) pools maps of ``in_channels`` (from
        ``source``); every stage's box head reads what it pools."""
        extractor_key = f"{where}.bbox_roi_extractor.out_channels"
        derive_or_check(self.bbox_roi_extractor, "out_channels", in_channels, source,
                        extractor_key)
        for stage, head in enumerate(self.bbox_head):
            connect_head(head, in_channels, extractor_key, f"{where}.bbox_head[{stage}]")
        if self.mask_head is None:
            return
        mask_key = extractor_key
        if self.mask_roi_extractor is not None:
            mask_key = f"{where}.mask_roi_extractor.out_channels"
            derive_or_check(self.mask_roi_extractor, "out_channels", in_channels, source,
                            mask_key)
        heads = self.mask_head if isinstance(self.mask_head, list) else [self.mask_head]
        for stage, head in enumerate(heads):
            name = f"mask_head[{stage}]" if isinstance(self.mask_head, list) else "mask_head"
            derive_or_check(head, "in_channels", in_channels, mask_key,
                            f"{where}.{name}.in_channels")


def refine_rois(bbox_head: BBoxHead, rois: Tensor, labels: Tensor | None, cls_score: Tensor,
                bbox_pred: Tensor, img_shapes: Tensor) -> Tensor:
    """One stage's regression of its RoIs, the boxes the next stage pools (MMDetection's
    ``regress_by_class``).

    rois (N, R, 4), cls_score (N, R, K + 1), bbox_pred (N, R, 4K or 4), img_shapes (N, 2) of
    (h, w) -> boxes (N, R, 4) decoded by the head's coder and clipped to each image. Each RoI
    reads the deltas of ``labels`` (N, R) where it is a class in [0, K) (training: the GT class
    of positives), else of its best foreground logit (test time passes None). A
    class-agnostic head has one set of deltas and ignores the class.
    """
    best = cls_score[..., :bbox_head.num_classes].argmax(dim=-1)  # (N, R): best foreground
    if labels is not None:
        best = torch.where((labels >= 0) & (labels < bbox_head.num_classes), labels, best)
    boxes, _ = bbox_head.predict_boxes(rois, cls_score, bbox_pred, img_shapes)  # (N, R, K, 4)
    index = best[..., None, None].expand(-1, -1, 1, 4)  # (N, R, 1, 4)
    return torch.gather(boxes, 2, index).squeeze(2)  # (N, R, 4)


def next_stage_proposals(samples: RoISamples, refined: Tensor) -> Proposals:
    """A stage's sampled RoIs, regressed (``refined`` (N, S, 4)), as the next stage's
    proposals: valid where sampled, except the GT boxes the sampler added that came out
    positive (MMDetection's ``pos_is_gt`` filter). Scores are 0 (nothing reads them)."""
    valid = samples.valid & ~(samples.gt_flags & samples.pos)  # (N, S)
    boxes = refined.detach() * valid[..., None]  # (N, S, 4) zeros off the valid slots
    return Proposals(boxes, torch.zeros_like(valid, dtype=boxes.dtype), valid)


@ROI_HEADS.register(CascadeRoIHeadConfig)
class CascadeRoIHead(nn.Module):
    """T stages of ``bbox_roi_extractor[t]`` -> ``bbox_head[t]``; see the module docstring.

    ``train_cfg`` (one :class:`RCNNTrainConfig` per stage; :class:`RCNNMaskTrainConfig` with a
    mask branch) is needed by :meth:`loss` only, ``test_cfg`` (``test_cfg.rcnn``) by
    :meth:`predict`. ``mask_head`` (one per stage) and ``mask_roi_extractor`` (one for every
    stage; None: the box extractors, which are one config) are the optional mask branch.
    """

    def __init__(
        self,
        *,
        bbox_roi_extractor: Sequence[nn.Module],
        bbox_head: Sequence[nn.Module],
        num_stages: int = 3,
        stage_loss_weights: Sequence[float] = STAGE_LOSS_WEIGHTS,
        train_cfg: Sequence[RCNNTrainConfig] | None = None,
        test_cfg: RCNNTestConfig | None = None,
        mask_roi_extractor: nn.Module | None = None,
        mask_head: Sequence[nn.Module] | None = None,
    ) -> None:
        super().__init__()
        for key, values in (("bbox_roi_extractor", bbox_roi_extractor),
                            ("bbox_head", bbox_head), ("stage_loss_weights", stage_loss_weights),
                            ("train_cfg.rcnn", train_cfg), ("mask_head", mask_head)):
            if values is not None and len(values) != num_stages:
                raise ConfigError(f"CascadeRoIHead has num_stages = {num_stages} but {key} has "
                                  f"{len(values)} entries: give one per stage")
        classes = {int(head.num_classes) for head in bbox_head}
        if len(classes) != 1:
            raise ConfigError(f"the cascade's box heads classify {sorted(classes)} classes: "
                              "every stage must have the same num_classes")
        if mask_head is None and mask_roi_extractor is not None:
            raise ConfigError("roi_head has a mask_roi_extractor but no mask_head: add "
                              "model.roi_head.mask_head or remove the extractor")
        if mask_head is not None:
            mask_classes = {int(head.num_classes) for head in mask_head}
            if mask_classes != classes:
                raise ConfigError(f"the cascade's mask heads segment {sorted(mask_classes)} "
                                  f"classes but its box heads classify {sorted(classes)}")
            if train_cfg is not None and not all(isinstance(stage, RCNNMaskTrainConfig)
                                                 for stage in train_cfg):
                raise ConfigError("a CascadeRoIHead with mask heads trains on mask targets of "
                                  "train_cfg.rcnn[t].mask_size pixels: give every stage's "
                                  "train_cfg a mask_size")
        self.num_stages = num_stages
        self.stage_loss_weights = [float(w) for w in stage_loss_weights]
        self.bbox_roi_extractor = nn.ModuleList(bbox_roi_extractor)
        self.bbox_head = nn.ModuleList(bbox_head)
        self.num_classes: int = classes.pop()
        self.train_cfg = None if train_cfg is None else list(train_cfg)
        self.test_cfg = test_cfg if test_cfg is not None else RCNNTestConfig()
        # None adds no module (no state-dict key): without mask heads this is Cascade R-CNN's
        self.mask_roi_extractor = mask_roi_extractor
        self.mask_head = None if mask_head is None else nn.ModuleList(mask_head)
        stage_masks: list[nn.Module | None] = \
            [None] * num_stages if mask_head is None else list(mask_head)
        self.stages: tuple[StandardRoIHead, ...] = tuple(
            StandardRoIHead(bbox_roi_extractor=extractor, bbox_head=head,
                            train_cfg=None if train_cfg is None else train_cfg[t],
                            test_cfg=self.test_cfg, mask_roi_extractor=mask_roi_extractor,
                            mask_head=stage_masks[t])
            for t, (extractor, head) in enumerate(zip(bbox_roi_extractor, bbox_head)))

    @classmethod
    def from_config(
        cls,
        cfg: CascadeRoIHeadConfig,
        *,
        train_cfg: Sequence[RCNNTrainConfig] | None = None,
        test_cfg: RCNNTestConfig | None = None,
    ) -> CascadeRoIHead:
        """Build one extractor per stage and each stage's box head, as the resolved config
        describes them (channels connected by :meth:`CascadeRoIHeadConfig.connect`)."""
        extractors = [ROI_EXTRACTORS.build(cfg.bbox_roi_extractor)
                      for _ in range(cfg.num_stages)]
        heads = [BBOX_HEADS.build(head) for head in cfg.bbox_head]
        mask_extractor = None if cfg.mask_roi_extractor is None else ROI_EXTRACTORS.build(
            cfg.mask_roi_extractor)
        mask_heads = [MASK_HEADS.build(head) for head in cfg.mask_heads()] or None
        return cls(bbox_roi_extractor=extractors, bbox_head=heads, num_stages=cfg.num_stages,
                   stage_loss_weights=cfg.stage_loss_weights, train_cfg=train_cfg,
                   test_cfg=test_cfg, mask_roi_extractor=mask_extractor, mask_head=mask_heads)

    # ---- training --------------------------------------------------------------------------

    def stage_samples(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
                      targets: DetTargets,
                      generator: torch.Generator | None = None) -> list[RoISamples]:
        """Every stage's samples as training draws them (no losses, no gradient): stage 0
        samples the proposals, stage t + 1 the refined boxes of stage t's samples. For the
        tools that show how the positives get stricter stage by stage."""
        with torch.no_grad():
            return [samples for samples, _, _ in self._cascade(feats, proposals, images,
                                                               targets, generator)]

    def _cascade(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
                 targets: DetTargets, generator: torch.Generator | None = None
                 ) -> Iterator[tuple[RoISamples, Tensor, Tensor]]:
        """Yield (samples, cls_score (N*S, K + 1), bbox_pred (N*S, 4K or 4)) per stage."""
        if self.train_cfg is None:
            raise DetError("CascadeRoIHead.loss needs train_cfg (one rcnn section per stage); "
                           "the model was built with train_cfg = false")
        if len(proposals) != len(images):
            raise DetError(f"proposals hold {len(proposals)} images but the image batch has "
                           f"{len(images)}")
        img_shapes = images.img_shapes.to(proposals.boxes.device, torch.float32)  # (N, 2)
        for t, stage in enumerate(self.stages):
            samples = stage.sample(proposals, targets, generator=generator)
            cls_score, bbox_pred = stage.bbox_forward(feats, batch_rois(samples.rois))
            yield samples, cls_score, bbox_pred
            if t + 1 < self.num_stages:
                num_images, num_slots = samples.labels.shape
                with torch.no_grad():
                    refined = refine_rois(
                        stage.bbox_head, samples.rois,
                        torch.where(samples.pos, samples.labels, -1),
                        cls_score.detach().view(num_images, num_slots, -1),
                        bbox_pred.detach().view(num_images, num_slots, -1), img_shapes)
                proposals = next_stage_proposals(samples, refined)

    def loss(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
             targets: DetTargets) -> dict[str, Tensor]:
        """``{"s{t}.loss_cls", "s{t}.loss_bbox", "s{t}.acc"}`` (and ``"s{t}.loss_mask"`` with
        mask heads) for t < T (MMDetection's keys): each stage's losses over its samples,
        times ``stage_loss_weights[t]``."""
        stage_losses: list[dict[str, Tensor]] = []
        stage_samples: list[RoISamples] = []
        for t, (samples, cls_score, bbox_pred) in enumerate(
                self._cascade(feats, proposals, images, targets)):
            stage_losses.append(self.stages[t].bbox_head.loss(
                cls_score,
                bbox_pred,
                samples.rois.reshape(-1, 4),  # (N*S, 4)
                samples.labels.reshape(-1),  # (N*S,)
                samples.label_weights.reshape(-1),  # (N*S,)
                samples.bbox_targets.reshape(-1, 4),  # (N*S, 4)
                samples.bbox_weights.reshape(-1),  # (N*S,)
                avg_factor_bbox=samples.valid.sum().clamp(min=1).float(),
            ))
            stage_samples.append(samples)
        if self.mask_head is not None:
            for own, mask_losses in zip(stage_losses,
                                        self.mask_losses(feats, stage_samples, targets)):
                own.update(mask_losses)
        losses: dict[str, Tensor] = {}
        for t, own in enumerate(stage_losses):
            weight = self.stage_loss_weights[t]
            for name, value in own.items():
                losses[f"s{t}.{name}"] = value * weight if name.startswith("loss") else value
        return losses

    @property
    def mask_extractor(self) -> nn.Module:
        """What pools the mask heads' RoIs: the mask extractor, else the box extractors' (one
        config, without parameters: any stage's pools what every stage's would)."""
        return self.mask_roi_extractor or self.bbox_roi_extractor[0]

    def mask_losses(self, feats: Sequence[Tensor], samples: Sequence[RoISamples],
                    targets: DetTargets) -> list[dict[str, Tensor]]:
        """``{"loss_mask"}`` of each stage (unweighted): stage t's mask head on stage t's
        positives (:meth:`StandardRoIHead.mask_loss_of`). Every stage's mask RoIs are pooled
        in one extractor call, so the branch costs one host sync (the RoIs per level)."""
        rois = [stage.mask_rois(own) for stage, own in zip(self.stages, samples)]  # (N, Q_t, 4)
        pooled = self.mask_extractor(feats, torch.cat([batch_rois(r) for r in rois]))
        pooled_per_stage = pooled.split([r.shape[0] * r.shape[1] for r in rois])  # (N*Q_t, ...)
        out = []
        for stage, own, stage_pooled in zip(self.stages, samples, pooled_per_stage):
            assert stage.mask_head is not None
            out.append(stage.mask_loss_of(stage.mask_head(stage_pooled), own, targets))
        return out

    # ---- inference -------------------------------------------------------------------------

    @property
    def with_mask(self) -> bool:
        """Whether the cascade has mask heads (Cascade Mask R-CNN)."""
        return self.mask_head is not None

    def predict_mask_probs(self, feats: Sequence[Tensor], dets: DetectionBatch,
                           **extract_kwargs: Any) -> Tensor:
        """dets (N, M) in network-input pixels -> (N, M, h, w): each detection's box pooled
        once, segmented by every stage's mask head, the sigmoid of its class channel averaged
        over the stages (MMDetection 3.3's ``predict_mask``); zeros on empty slots.
        ``extract_kwargs`` go to the extractor (the ONNX graph's ``dense = True``)."""
        if self.mask_head is None:
            raise DetError("this CascadeRoIHead has no mask_head: it predicts boxes only")
        heads = list(self.mask_head)

        def class_probs(rois: Tensor, labels: Tensor) -> Tensor:  # (R, 5), (R,) -> (R, h, w)
            pooled = self.mask_extractor(feats, rois, **extract_kwargs)  # (R, C, S, S)
            total = heads[0].class_probs(heads[0](pooled), labels)
            for head in heads[1:]:
                total = total + head.class_probs(head(pooled), labels)
            return total / len(heads)

        return segment_detections(dets, class_probs)

    def box_stages(self) -> list[tuple[nn.Module, nn.Module]]:
        """(RoI extractor, box head) of each stage, in order."""
        return list(zip(self.bbox_roi_extractor, self.bbox_head))

    def box_outputs(self, feats: Sequence[Tensor], rois: Tensor,
                    clip: Callable[[Tensor], Tensor] | None = None,
                    **extract_kwargs: Any) -> tuple[Tensor, Tensor, Tensor]:
        """rois (N, P, 4) through every stage -> (the RoIs the last stage pooled (N, P, 4),
        cls_score (N, P, K + 1) the stages' logits averaged, bbox_pred (N, P, 4K or 4) the
        last stage's). Each refinement is clipped by ``clip`` (boxes (N, P, 4) -> clipped:
        :meth:`predict` clips to the images' shapes, the ONNX graph by its own rule);
        ``extract_kwargs`` go to the extractors (the graph's ``dense = True``). Fixed shapes,
        no host sync."""
        num_images, num_rois = rois.shape[:2]
        total = None
        bbox_pred = rois.new_zeros(0)
        for t, (extractor, head) in enumerate(self.box_stages()):
            roi_feats = extractor(feats, batch_rois(rois), **extract_kwargs)  # (N*P, C, S, S)
            cls_score, bbox_pred = head(roi_feats)  # (N*P, K + 1), (N*P, 4K or 4)
            cls_score = cls_score.view(num_images, num_rois, -1)  # (N, P, K + 1)
            bbox_pred = bbox_pred.view(num_images, num_rois, -1)  # (N, P, 4K or 4)
            total = cls_score if total is None else total + cls_score
            if t + 1 < self.num_stages:
                rois = refine_rois(head, rois, None, cls_score, bbox_pred, None)  # unclipped
                if clip is not None and head.bbox_coder.clip_border:  # as the coder would
                    rois = clip(rois)
        assert total is not None
        return rois, total / self.num_stages, bbox_pred

    def predict(self, feats: Sequence[Tensor], proposals: Proposals, images: ImageBatch,
                rescale: bool = True) -> DetectionBatch:
        """Detections of every image, padded to ``test_cfg.max_per_img``, boxes in
        original-image pixels with ``rescale`` (else network-input pixels); with mask heads
        also their (N, M, h, w) mask probabilities (boxes predicted in network-input pixels,
        segmented, then rescaled: MMDetection's order)."""
        proposals = trim_padding(proposals)
        img_shapes = images.img_shapes.to(proposals.boxes.device, torch.float32)  # (N, 2)
        rois, cls_score, bbox_pred = self.box_outputs(
            feats, proposals.boxes.float(), lambda boxes: clip_boxes(boxes, img_shapes))
        det_boxes, scores = self.bbox_head[-1].predict_boxes(
            rois, cls_score, bbox_pred, img_shapes)  # (N, P, K, 4), (N, P, K)
        dets = rcnn_detections(det_boxes, scores, proposals.valid, images, self.test_cfg,
                               rescale and not self.with_mask)
        if not self.with_mask:
            return dets
        return with_mask_probs(dets, self.predict_mask_probs(feats, dets), images, rescale)
