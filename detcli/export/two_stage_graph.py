"""What an exported two-stage detector (Faster R-CNN) computes: network input -> fixed-size
detections, the RPN's NMS and the final NMS both inside the graph.

N images, H x W the (padded) network input, L RPN levels, H_l x W_l the feature map of level l,
A anchors per location, k = ``test_cfg.rpn.nms_pre`` candidates per level, B = L * k RPN
candidates per image (every anchor, B = sum_l H_l*W_l*A, when ``nms_pre <= 0``), P =
``test_cfg.rpn.max_per_img`` proposal slots per image, C channels, S x S the pooled RoI size,
K classes, M = ``test_cfg.rcnn.max_per_img``.

:class:`TwoStageExportWrapper` follows
:meth:`~detcli.models.detectors.two_stage.TwoStageDetector.predict_batch` (the RPN's
:func:`~detcli.models.dense_heads.proposals.generate_proposals`, then
:meth:`~detcli.models.roi_heads.standard_roi_head.StandardRoIHead.predict`) step by step, with
the fixed shapes ``torch.export`` needs for a symbolic batch and image size:

1. RPN, per level: the k best objectness logits -- the RPN head's own ``candidates`` with
   ``static_k`` (-inf filler so k is a constant) -- their anchors built in the graph from the
   feature map's shape (:func:`~detcli.export.graph.level_priors`), the deltas decoded and
   clipped;
   candidates with a side at or below ``min_bbox_size`` get score 0 (a mask, not a filter);
2. the first NMS: ONNX ``NonMaxSuppression`` on boxes (N, B, 4) and scores (N, L, B), each
   candidate's score in its level's row -- boxes of different levels never suppress each
   other, as MMDetection's level ids in ``batched_nms`` (one row with
   ``test_cfg.rpn.nms.class_agnostic``) -- at most P per (image, level), score threshold 0;
   the kept scores are scattered back and the P best of each image taken: proposals (N, P, 4),
   their objectness (N, P) and ``valid`` (N, P), score > 0; padding slots have box 0;
3. RoIs (N*P, 5) ``[image, x1, y1, x2, y2]``, pooled by the
   :class:`~detcli.models.roi_heads.roi_extractor.SingleRoIExtractor`'s dense path: every
   level's RoIAlign on every RoI, the RoI's own level (``map_roi_levels``) picked by a mask.
   ``torchvision::roi_align`` becomes an ONNX ``RoiAlign`` node per level: ``aligned = true``
   as ``coordinate_transformation_mode = "half_pixel"``, ``sampling_ratio = 0`` as ONNX's
   adaptive ``ceil(roi_size / S)`` samples per bin, average pooling;
4. the box head on the (N*P, C, S, S) features (Cascade R-CNN: every stage's, each pooling
   the previous stage's regression of the RoIs, clipped, its logits averaged over the stages
   and the last stage's deltas decoded); softmax scores without the background column
   (N, P, K); each class's deltas decoded against its proposal and clipped (N, P, K, 4); score
   0 unless the proposal is valid, the score is above ``score_thr`` and both sides are above
   ``min_bbox_size``;
5. the second NMS: one ``NonMaxSuppression`` whose batch axis is (image, class): boxes
   (N*K, P, 4) and scores (N*K, 1, P). Boxes are class-specific, so the single-stage layout
   (boxes (N, P*K, 4), scores (N, K, P*K)) would hold K times the scores to no purpose. With
   ``test_cfg.rcnn.nms.class_agnostic``: boxes (N, P*K, 4), one score row. At most M per
   (image, class); the kept scores scattered back and the M best of each image taken, padded:
   slots past ``num_dets`` have box 0, score 0 and label -1.

6. with a mask branch (Mask R-CNN; ``roi_head.with_mask``) the M detections are segmented
   in the graph, as ``predict`` segments them: their boxes (network-input pixels, clipped)
   pooled by the mask RoI extractor's dense path (one more ``RoiAlign`` per level, 14 x 14),
   the mask head, the sigmoid of each detection's class channel: ``mask_probs`` (N, M, h, w)
   (28 x 28), zeros past ``num_dets``. Pasting them into the original image (the box's region,
   thresholded at ``test_cfg.rcnn.mask_thr_binary``) is a host step, which
   :meth:`detcli.inference.detector.Detector.from_onnx` performs with the same
   :func:`~detcli.models.roi_heads.mask_paste.paste_masks` as PyTorch's ``predict``. Masks
   need the final boxes, so a mask model is exported with NMS only.

Boxes are clipped (steps 1 and 4) to the input tensor's (H, W), or to each image's (h, w) with
the ``image_sizes`` input, as :class:`~detcli.export.graph.ExportWrapper` does. With
``nms=False`` the graph ends before step 5 with the P*K masked candidates of each image; the
RPN's NMS stays in the graph (proposals need it).
"""

from __future__ import annotations


import torch
from torch import Tensor, nn

from detcli.errors import ExportError
from detcli.export.graph import (
    OUTPUTS_MASKS,
    OUTPUTS_NMS,
    OUTPUTS_NO_NMS,
    check_hard_nms,
    clip_in_graph,
    level_priors,
    nms_keep,
    top_per_image,
)
from detcli.models.dense_heads.dense_predict import size_ok
from detcli.models.protocols import BBoxHead, Detector, RoIHead
from detcli.structures.dense import DenseOutputs
from detcli.structures.detections import DetectionBatch
from detcli.structures.proposals import Proposals


def is_two_stage(model: Detector) -> bool:
    """A detector with an RPN and a RoI head (exported by :class:`TwoStageExportWrapper`), as
    its ``stages`` declare."""
    return model.stages.two_stage


class TwoStageExportWrapper(nn.Module):
    """``forward(images (N, 3, H, W) float32)`` -> ``boxes (N, M, 4)``, ``scores (N, M)``,
    ``labels (N, M)`` int64, ``num_dets (N,)`` int64, and with a mask branch ``mask_probs
    (N, M, h, w)`` float32 (step 6); with ``nms=False`` the masked candidates ``boxes (N, P*K,
    4)``, ``scores (N, P*K)``, ``labels (N, P*K)`` before the final NMS (module docstring). ``forward(images, image_sizes)`` with ``image_sizes`` (N, 2) int64,
    each image's (h, w) before padding, clips to those, as ``predict_batch`` does with
    ``ImageBatch.img_shapes``.

    ``model`` is a two-stage detector: ``forward(images)`` -> (features, RPN outputs), and its
    ``stages``: the RPN (a dense head whose prior generator makes anchors; its coder), the RoI
    head with ``box_stages()`` and ``box_outputs()`` (the RoIHead protocol: one box stage or a
    cascade's; the last box head's K + 1 softmax logits, 4K or 4 deltas, ``bbox_coder``), the
    proposal settings (``test_cfg.rpn``) and the RoI head's ``test_cfg`` for the detections --
    what ``predict_batch`` reads.
    """

    def __init__(self, model: Detector, *, nms: bool = True) -> None:
        super().__init__()
        stages = model.stages
        if stages.roi_head is None:
            raise ExportError(f"{type(model).__name__} is not a two-stage detector: the "
                              "two-stage export needs an rpn_head and a roi_head")
        rpn_head = stages.dense_head
        roi_head: RoIHead = stages.roi_head
        proposal_cfg = stages.proposal_cfg
        rcnn_cfg = roi_head.test_cfg
        check_hard_nms(proposal_cfg.nms, "model.test_cfg.rpn.nms")  # always in the graph
        if nms:
            check_hard_nms(rcnn_cfg.nms, "model.test_cfg.rcnn.nms")
        generator = rpn_head.prior_generator
        if generator.priors_are_points:
            raise ExportError(f"the RPN's prior generator {type(generator).__name__} makes "
                              "points: the RPN decodes deltas against anchors (boxes)")
        box_stages = roi_head.box_stages()  # (extractor, box head) per stage: 1, or a cascade's
        extractor = box_stages[0][0]
        bbox_head: BBoxHead = box_stages[-1][1]  # its coder decodes the detections
        self.with_mask = bool(roi_head.with_mask)
        if self.with_mask and not nms:
            raise ExportError("a Mask R-CNN export needs the final NMS in the graph: its masks "
                              "are computed on the final boxes",
                              hint="export without --no-nms")
        self.model = model
        self.nms = nms
        # every RoIExtractor (models/protocols.py) has the dense path: fixed shapes, no host sync
        self.extractor_kwargs = {"dense": True}
        self.rpn_clip = bool(rpn_head.bbox_coder.clip_border)
        self.generator = generator
        self.proposal_cfg = proposal_cfg
        self.num_proposals = int(proposal_cfg.max_per_img)  # P
        self.rpn_min_size = float(proposal_cfg.min_bbox_size)
        self.rpn_iou = float(proposal_cfg.nms.iou_threshold)
        self.rpn_agnostic = bool(proposal_cfg.nms.class_agnostic)
        self.num_classes = int(bbox_head.num_classes)
        self.rcnn_clip = bool(bbox_head.bbox_coder.clip_border)
        self.score_thr = float(rcnn_cfg.score_thr)
        self.min_bbox_size = float(rcnn_cfg.min_bbox_size)
        self.max_per_img = int(rcnn_cfg.max_per_img)
        self.iou_threshold = float(rcnn_cfg.nms.iou_threshold)
        self.class_agnostic = bool(rcnn_cfg.nms.class_agnostic)

    @property
    def output_names(self) -> tuple[str, ...]:
        if not self.nms:
            return OUTPUTS_NO_NMS
        return OUTPUTS_NMS + OUTPUTS_MASKS if self.with_mask else OUTPUTS_NMS

    def forward(self, images: Tensor, image_sizes: Tensor | None = None) -> tuple[Tensor, ...]:
        feats, rpn = self.model(images)  # L x (N, C, H_l, W_l); RPN logits and deltas
        proposals = self.proposals(rpn.cls_logits, rpn.bbox_deltas, images, image_sizes)
        boxes, scores = self.detection_candidates(feats, proposals, images,
                                                  image_sizes)  # (N, P, K, 4), (N, P, K)
        if not self.nms:
            num_images, num_props = scores.shape[:2]
            labels = torch.arange(self.num_classes, device=scores.device).expand(
                num_images, num_props, -1)  # (N, P, K)
            flat = num_props * self.num_classes
            return (boxes.reshape(num_images, flat, 4), scores.reshape(num_images, flat),
                    labels.reshape(num_images, flat))  # (N, P*K, 4), (N, P*K), (N, P*K)
        detections = self.suppress(boxes, scores)
        if not self.with_mask:
            return detections
        return detections + (self.mask_probs(feats, *detections),)

    def mask_probs(self, feats: tuple[Tensor, ...], boxes: Tensor, scores: Tensor,
                   labels: Tensor, num_dets: Tensor) -> Tensor:
        """The M detections (N, M, ...) of each image segmented (step 6) -> (N, M, h, w), every
        slot pooled (fixed shapes), zeros past ``num_dets``."""
        dets = DetectionBatch(boxes, scores, labels, num_dets)
        roi_head: RoIHead = self.model.stages.roi_head
        return roi_head.predict_mask_probs(feats, dets, **self.extractor_kwargs)

    # ---- stage 1: the RPN's proposals (steps 1-2) --------------------------------------------

    def level_anchors(self, level: int, cls_logits: Tensor) -> Tensor:
        """Anchors (H_l*W_l*A, 4) of ``level`` for its logits (N, A, H_l, W_l) of (symbolic)
        size H_l x W_l."""
        return level_priors(self.generator, level, cls_logits)

    def proposals(self, cls_logits: list[Tensor], bbox_deltas: list[Tensor], images: Tensor,
                  image_sizes: Tensor | None = None) -> Proposals:
        """Objectness L x (N, A, H_l, W_l) and deltas L x (N, A*4, H_l, W_l) -> P proposal
        slots per image (steps 1-2): what ``rpn_head.predict_proposals`` gives for
        ``test_cfg.rpn``, boxes in network-input pixels."""
        anchors = [self.level_anchors(level, logits) for level, logits in enumerate(cls_logits)]
        cand = self.model.stages.dense_head.candidates(
            DenseOutputs(list(cls_logits), list(bbox_deltas)), None, anchors, static_k=True,
            cfg=self.proposal_cfg)  # (N, B, ...): one sigmoid logit per anchor, not clipped
        boxes_cat, scores_cat = cand.boxes, cand.scores  # (N, B, 4), (N, B)
        levels_cat = cand.labels  # (N, B) the NMS row of each candidate
        if self.rpn_clip:
            boxes_cat = clip_in_graph(boxes_cat, images, image_sizes)  # (N, B, 4)
        keep = size_ok(boxes_cat, self.rpn_min_size)  # (N, B)
        scores_cat = torch.where(keep, scores_cat, torch.zeros_like(scores_cat))  # (N, B)
        num_images, num_cand = scores_cat.shape
        if self.rpn_agnostic:
            columns = scores_cat[:, None, :]  # (N, 1, B)
        else:
            columns = scores_cat.new_zeros(num_images, len(cls_logits), num_cand).scatter(
                1, levels_cat[:, None, :], scores_cat[:, None, :])  # (N, L, B)
        kept = nms_keep(boxes_cat, columns, self.num_proposals, self.rpn_iou)  # (N, L|1, B)
        top_scores, top_index = top_per_image(kept.reshape(num_images, -1),
                                              self.num_proposals)  # (N, P) each
        valid = top_scores > 0  # (N, P): masked candidates, filler and padding are 0
        box_index = (top_index % num_cand).clamp(max=num_cand - 1)  # (N, P)
        props = torch.gather(boxes_cat, 1, box_index[..., None].expand(-1, -1, 4))  # (N, P, 4)
        return Proposals(boxes=props * valid[..., None].to(props.dtype), scores=top_scores,
                         valid=valid)

    # ---- stage 2: the RoI head's detections (steps 3-5) ---------------------------------------

    def detection_candidates(self, feats: tuple[Tensor, ...], proposals: Proposals,
                             images: Tensor, image_sizes: Tensor | None = None
                             ) -> tuple[Tensor, Tensor]:
        """Every proposal slot classified and regressed (steps 3-4) -> per-class boxes (N, P,
        K, 4), clipped, and scores (N, P, K), 0 where masked."""
        roi_head = self.model.stages.roi_head
        props = proposals.boxes.float()  # (N, P, 4)
        num_images, num_props = props.shape[:2]
        num_classes = self.num_classes
        # every box stage (a cascade refines the RoIs between stages, clipped as the boxes)
        rois, cls_score, bbox_pred = roi_head.box_outputs(
            feats, props, lambda boxes: clip_in_graph(boxes, images, image_sizes),
            **self.extractor_kwargs)  # (N, P, 4), (N, P, K + 1), (N, P, 4K or 4)
        # the last box head's own decoding (as predict), clipped by the graph's rule instead
        last_head: BBoxHead = roi_head.box_stages()[-1][1]
        boxes, scores = last_head.predict_boxes(rois, cls_score, bbox_pred,
                                                None)  # (N, P, K, 4), (N, P, K)
        if self.rcnn_clip:
            boxes = clip_in_graph(boxes.reshape(num_images, -1, 4), images,
                                  image_sizes).reshape(num_images, num_props, num_classes, 4)
        widths = boxes[..., 2] - boxes[..., 0]  # (N, P, K)
        heights = boxes[..., 3] - boxes[..., 1]  # (N, P, K)
        keep = (proposals.valid[..., None] & (scores > self.score_thr)
                & (widths > self.min_bbox_size) & (heights > self.min_bbox_size))  # (N, P, K)
        return boxes, torch.where(keep, scores, torch.zeros_like(scores))

    def suppress(self, boxes: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Masked per-class candidates (N, P, K, 4), (N, P, K) -> padded detections (N, M, ...)
        and counts (step 5)."""
        num_images, num_props, num_classes = scores.shape
        classes = torch.arange(num_classes, device=scores.device)  # (K,)
        if self.class_agnostic:  # every box against every other of its image
            cand_boxes = boxes.reshape(num_images, -1, 4)  # (N, P*K, 4)
            kept = nms_keep(cand_boxes, scores.reshape(num_images, 1, -1), self.max_per_img,
                            self.iou_threshold)  # (N, 1, P*K)
            cand_labels = classes.repeat(num_props)  # (P*K,): (proposal, class) order
        else:  # (image, class) on NMS's batch axis: per-class boxes, one score row each
            per_class = boxes.permute(0, 2, 1, 3).reshape(-1, num_props, 4)  # (N*K, P, 4)
            kept = nms_keep(per_class, scores.permute(0, 2, 1).reshape(-1, 1, num_props),
                            self.max_per_img, self.iou_threshold)  # (N*K, 1, P)
            cand_boxes = per_class.reshape(num_images, -1, 4)  # (N, K*P, 4)
            cand_labels = classes.repeat_interleave(num_props)  # (K*P,): (class, proposal)
        num_cand = cand_boxes.shape[1]  # P*K
        top_scores, top_index = top_per_image(kept.reshape(num_images, num_cand),
                                              self.max_per_img)  # (N, M) each
        valid = top_scores > 0  # (N, M): kept scores are > 0, masked ones and filler are 0
        index = top_index.clamp(max=num_cand - 1)  # (N, M)
        labels = torch.where(valid, cand_labels[index], torch.full_like(index, -1))  # (N, M)
        out_boxes = torch.gather(cand_boxes, 1, index[..., None].expand(-1, -1, 4))  # (N, M, 4)
        out_boxes = out_boxes * valid[..., None].to(out_boxes.dtype)  # (N, M, 4), 0 past num_dets
        return out_boxes, top_scores, labels, valid.sum(dim=1)
