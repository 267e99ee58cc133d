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

The stages reuse :class:`~detcli.models.roi_heads.standard_roi_head.StandardRoIHead` for
sampling and pooling: ``stages[t]`` is a StandardRoIHead over ``bbox_roi_extractor[t]`` and
``bbox_head[t]`` with ``train_cfg.rcnn[t]``. The views are held in a tuple, not registered as
modules: the parameters belong to (and move, save and load with) the ModuleLists.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Literal, Sequence

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import derive_or_check
from detcli.errors import ConfigError, DetError
from detcli.models.channels import RoIHeadSchema, connect_head
from detcli.models.protocols import BBoxHead
from detcli.models.roi_heads.standard_roi_head import (
    RoISamples,
    StandardRoIHead,
    batch_rois,
    fpn_roi_extractor,
    rcnn_detections,
    trim_padding,
)
from detcli.ops.boxes import clip_boxes
from detcli.registry import BBOX_HEADS, ROI_EXTRACTORS, ROI_HEADS, BBoxHeadConfig, RoIExtractorConfig
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.detections import DetectionBatch
from detcli.structures.proposals import Proposals
from detcli.task.two_stage_cfg import RCNNTestConfig, RCNNTrainConfig

STAGE_LOSS_WEIGHTS = (1.0, 0.5, 0.25)  # MMDetection's Cascade R-CNN


def stage_loss_weights() -> list[float]:
    return list(STAGE_LOSS_WEIGHTS)


class CascadeRoIHeadConfig(RoIHeadSchema):
    """``bbox_roi_extractor`` is one config, built once per stage (MMDetection's single-dict
    form); ``bbox_head`` lists one box head per stage."""

    type: Literal["CascadeRoIHead"] = "CascadeRoIHead"
    num_stages: int = Field(3, ge=1)
    stage_loss_weights: list[float] = Field(default_factory=stage_loss_weights)
    bbox_roi_extractor: RoIExtractorConfig = Field(default_factory=fpn_roi_extractor)
    bbox_head: list[BBoxHeadConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _per_stage(self) -> CascadeRoIHeadConfig:
        for key, values in (("stage_loss_weights", self.stage_loss_weights),
                            ("bbox_head", self.bbox_head)):
            if len(values) != self.num_stages:
                raise ValueError(
                    f"model.roi_head.{key} has {len(values)} entries but "
                    f"model.roi_head.num_stages is {self.num_stages}: give one per stage")
        classes = [getattr(head, "num_classes", None) for head in self.bbox_head]
        if len(set(classes)) > 1:
            raise ValueError(
                f"model.roi_head.bbox_head[*].num_classes are {classes}: every stage classifies "
                "the same classes, so set them equal")
        roi_layer = getattr(self.bbox_roi_extractor, "roi_layer", None)
        pooled = getattr(roi_layer, "output_pair", None)
        for stage, head in enumerate(self.bbox_head):
            feat_size = getattr(head, "roi_feat_size", None)
            if pooled is not None and feat_size is not None and tuple(pooled) != (feat_size,) * 2:
                raise ValueError(
                    f"model.roi_head.bbox_head[{stage}].roi_feat_size = {feat_size} disagrees "
                    f"with model.roi_head.bbox_roi_extractor.roi_layer.output_size = "
                    f"{roi_layer.output_size}: the box heads read the pooled RoI features, so "
                    "set both to the same size")
        return self

    def connect(self, in_channels: int, source: str, where: str) -> None:
        """The extractor (one config, built per stage) pools maps of ``in_channels`` (from
        ``source``); every stage's box head reads what it pools."""
        extractor_key = f"{where}.bbox_roi_extractor.out_channels"
        derive_or_check(self.bbox_roi_extractor, "out_channels", in_channels, source,
                        extractor_key)
        for stage, head in enumerate(self.bbox_head):
            connect_head(head, in_channels, extractor_key, f"{where}.bbox_head[{stage}]")


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

    ``train_cfg`` (one :class:`RCNNTrainConfig` per stage) is needed by :meth:`loss` only,
    ``test_cfg`` (``test_cfg.rcnn``) by :meth:`predict`.
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
    ) -> None:
        super().__init__()
        for key, values in (("bbox_roi_extractor", bbox_roi_extractor),
                            ("bbox_head", bbox_head), ("stage_loss_weights", stage_loss_weights),
                            ("train_cfg.rcnn", train_cfg)):
            if values is not None and len(values) != num_stages:
                raise ConfigError(f"CascadeRoIHead has num_stages = {num_stages} but {key} has "
                                  f"{len(values)} entries: give one per stage")
        classes = {int(head.num_classes) for head in bbox_head}
        if len(classes) != 1:
            raise ConfigError(f"the cascade's box heads classify {sorted(classes)} classes: "
                              "every stage must have the same num_classes")
        self.num_stages = num_stages
        self.stage_loss_weights = [float(w) for w in stage_loss_weights]
        self.bbox_roi_extractor = nn.ModuleList(bbox_roi_extractor)
        self.bbox_head = nn.ModuleList(bbox_head)
        self.num_classes: int = classes.pop()
        self.train_cfg = None if train_cfg is None else list(train_cfg)
        self.test_cfg = test_cfg if test_cfg is not None else RCNNTestConfig()
        self.stages: tuple[StandardRoIHead, ...] = tuple(
            StandardRoIHead(bbox_roi_extractor=extractor, bbox_head=head,
                            train_cfg=None if train_cfg is None else train_cfg[t],
                            test_cfg=self.test_cfg)
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
        return cls(bbox_roi_extractor=extractors, bbox_head=heads, num_stages=cfg.num_stages,
                   stage_loss_weights=cfg.stage_loss_weights, train_cfg=train_cfg,
                   test_cfg=test_cfg)

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
        """``{"s{t}.loss_cls", "s{t}.loss_bbox", "s{t}.acc"}`` for t < T (MMDetection's keys):
        each stage's box-head losses over its samples, times ``stage_loss_weights[t]``."""
        losses: dict[str, Tensor] = {}
        stages = self._cascade(feats, proposals, images, targets)
        for t, (samples, cls_score, bbox_pred) in enumerate(stages):
            stage_losses = self.stages[t].bbox_head.loss(
                cls_score,
                bbox_pred,
                samples.rois.reshape(-1, 4),  # (N*S, 4)
                samples.labels.reshape(-1),  # (N*S,)
                samples.label_weights.reshape(-1),  # (N*S,)
                samples.bbox_targets.reshape(-1, 4),  # (N*S, 4)
                samples.bbox_weights.reshape(-1),  # (N*S,)
                avg_factor_bbox=samples.valid.sum().clamp(min=1).float(),
            )
            weight = self.stage_loss_weights[t]
            for name, value in stage_losses.items():
                losses[f"s{t}.{name}"] = value * weight if name.startswith("loss") else value
        return losses

    # ---- inference -------------------------------------------------------------------------

    @property
    def with_mask(self) -> bool:
        """Cascade R-CNN has no mask branch here (Cascade Mask R-CNN is not built)."""
        return False

    def predict_mask_probs(self, feats: Sequence[Tensor], dets: DetectionBatch,
                           **extract_kwargs: Any) -> Tensor:
        """No mask branch: a DetError (callers ask ``with_mask`` first)."""
        raise DetError("CascadeRoIHead has no mask branch: it predicts boxes only")

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
        original-image pixels with ``rescale`` (else network-input pixels)."""
        proposals = trim_padding(proposals)
        img_shapes = images.img_shapes.to(proposals.boxes.device, torch.float32)  # (N, 2)
        rois, cls_score, bbox_pred = self.box_outputs(
            feats, proposals.boxes.float(), lambda boxes: clip_boxes(boxes, img_shapes))
        det_boxes, scores = self.bbox_head[-1].predict_boxes(
            rois, cls_score, bbox_pred, img_shapes)  # (N, P, K, 4), (N, P, K)
        return rcnn_detections(det_boxes, scores, proposals.valid, images, self.test_cfg,
                               rescale)
