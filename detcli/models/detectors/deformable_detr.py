"""Deformable DETR (Zhu et al. 2021): DETR whose attention reads a few sampled points of
several feature levels, so it trains in 50 epochs instead of 500. MMDetection 3.3's
``DeformableDETR``, its module names (its checkpoints load strictly) and its three variants.

N images, (H, W) the padded batch, L = ``num_feature_levels`` maps, S tokens over them, D =
``embed_dims``, Q = ``num_queries``, J decoder layers, K classes.

::

    images -> backbone (C3..C5) -> neck (ChannelMapper to D, one stride-2 extra conv: L = 4)
      -> multi_level_tokens: tokens (N, S, D), positions + level_embed, masks, valid ratios
      -> encoder (deformable self-attention) -> memory (N, S, D)
      -> queries:  plain / refine: query_embedding (Q, 2D) = (query_pos, query),
                   references sigmoid(reference_points_fc(query_pos)) (N, Q, 2)
                   two-stage: each token proposes a box (two_stage.py), the head's extra
                   branch scores it, the top Q by class 0 give the references (N, Q, 4) and
                   (pos_trans_fc, pos_trans_norm of their sine embedding) the queries
      -> decoder (deformable cross-attention; with_box_refine: the head's reg_branches move
         the references after each layer) -> hidden states (J, N, Q, D)
      -> bbox_head (DeformableDETRHead): logits (J, N, Q, K), boxes (J, N, Q, 4)

The config connects the widths and levels once (the neck's channels and outputs, the
transformer's ``embed_dims`` and ``num_levels``, the positions' ``2 * num_feats``) and derives
the head's ``share_pred_layer`` (not ``with_box_refine``), ``num_pred_layer`` (J, + 1
two-stage) and ``as_two_stage``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema, derive_or_check
from detcli.models.channels import BackboneSchema, NeckSchema, trunk_channels
from detcli.models.detectors.detr import QueryDetector
from detcli.models.detectors.single_stage import build_trunk
from detcli.models.layers import xavier_init
from detcli.models.protocols import DenseStageConfig
from detcli.models.query_heads.deformable_detr_head import deformable_train_cfg
from detcli.models.query_heads.detr_head import DETRTestConfig, DETRTrainConfig
from detcli.models.transformer.deformable import MultiScaleDeformableAttention
from detcli.models.transformer.deformable_layers import (
    DeformableDetrTransformerDecoder,
    DeformableDetrTransformerDecoderConfig,
    DeformableDetrTransformerEncoder,
    DeformableDetrTransformerEncoderConfig,
    MultiLevelTokens,
    multi_level_tokens,
)
from detcli.models.transformer.positional_encoding import SinePositionalEncodingConfig
from detcli.models.transformer.two_stage import encoder_proposals, proposal_pos_embed
from detcli.registry import BACKBONES, DETECTORS, HEADS, NECKS, POSITIONAL_ENCODINGS, HeadConfig
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.queries import QueryOutputs


def deformable_positional_encoding() -> SinePositionalEncodingConfig:
    return SinePositionalEncodingConfig(num_feats=128, normalize=True, offset=-0.5)


class DeformableDETRConfig(Schema):
    type: Literal["DeformableDETR"] = "DeformableDETR"
    backbone: Annotated[BackboneSchema, BACKBONES]
    neck: Maybe[Annotated[NeckSchema, NECKS]] = None
    encoder: DeformableDetrTransformerEncoderConfig = Field(
        default_factory=DeformableDetrTransformerEncoderConfig)
    decoder: DeformableDetrTransformerDecoderConfig = Field(
        default_factory=DeformableDetrTransformerDecoderConfig)
    positional_encoding: SinePositionalEncodingConfig = Field(
        default_factory=deformable_positional_encoding)
    num_queries: int = Field(300, ge=1)
    num_feature_levels: int = Field(4, ge=1)
    with_box_refine: bool = False
    as_two_stage: bool = False
    bbox_head: HeadConfig
    train_cfg: Maybe[DETRTrainConfig] = Field(default_factory=deformable_train_cfg)
    test_cfg: DETRTestConfig = Field(default_factory=DETRTestConfig)

    @model_validator(mode="after")
    def _connect(self) -> DeformableDETRConfig:
        channels, source = trunk_channels(self.backbone, self.neck)
        feats = self.backbone.out_channels()
        levels = len(feats if self.neck is None else
                     self.neck.connect(feats, self.backbone.describe("model.backbone"),
                                       "model.neck"))
        widths = {
            source: channels,
            "model.encoder (self_attn_cfg.embed_dims)": self.encoder.embed_dims,
            "model.decoder (self_attn_cfg.embed_dims)": self.decoder.embed_dims,
            "model.decoder (cross_attn_cfg.embed_dims)":
                self.decoder.layer_cfg.cross_attn_cfg.embed_dims,
            f"model.positional_encoding (2 x num_feats {self.positional_encoding.num_feats})":
                self.positional_encoding.out_channels(),
        }
        counts = {
            "model.num_feature_levels": self.num_feature_levels,
            "the maps of model.neck (or model.backbone)": levels,
            "model.encoder (self_attn_cfg.num_levels)": self.encoder.num_levels,
            "model.decoder (cross_attn_cfg.num_levels)": self.decoder.num_levels,
        }
        for what, values in (("widths", widths), ("feature levels", counts)):
            if len(set(values.values())) != 1:
                listed = ", ".join(f"{where} = {value}" for where, value in values.items())
                raise ValueError(f"Deformable DETR's {what} must agree: {listed}")
        head, reason = self.bbox_head, "model.with_box_refine / as_two_stage / decoder"
        derive_or_check(head, "embed_dims", self.decoder.embed_dims,
                        "model.decoder (embed_dims)", "model.bbox_head.embed_dims")
        derive_or_check(head, "share_pred_layer", not self.with_box_refine, reason,
                        "model.bbox_head.share_pred_layer")
        derive_or_check(head, "num_pred_layer", self.decoder.num_layers + self.as_two_stage,
                        reason, "model.bbox_head.num_pred_layer")
        derive_or_check(head, "as_two_stage", self.as_two_stage, reason,
                        "model.bbox_head.as_two_stage")
        return self

    def dense_stage(self) -> DenseStageConfig:
        """Where the head sits (``model.bbox_head``, a query head: no priors to assign)."""
        return DenseStageConfig(head=self.bbox_head, train_cfg=self.train_cfg,
                                head_key="model.bbox_head", train_key="model.train_cfg",
                                two_stage=False)


class DecoderQueries(NamedTuple):
    """What the decoder starts from, and the two-stage proposals the head's loss reads."""

    query: Tensor  # (N, Q, D)
    query_pos: Tensor  # (N, Q, D)
    reference_points: Tensor  # (N, Q, 2) points, or (N, Q, 4) boxes two-stage
    encoder_outputs: QueryOutputs | None  # (1, N, S, K) logits, (1, N, S, 4) boxes


@DETECTORS.register(DeformableDETRConfig)
class DeformableDETR(QueryDetector):
    """Backbone, neck, deformable transformer and DeformableDETRHead (module docstring)."""

    def __init__(self, *, backbone: nn.Module, neck: nn.Module | None,
                 positional_encoding: nn.Module, encoder: DeformableDetrTransformerEncoder,
                 decoder: DeformableDetrTransformerDecoder, bbox_head: nn.Module,
                 num_queries: int = 300, num_feature_levels: int = 4,
                 with_box_refine: bool = False, as_two_stage: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.positional_encoding = positional_encoding
        self.encoder = encoder
        self.decoder = decoder
        self.bbox_head = bbox_head
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.with_box_refine = with_box_refine
        self.as_two_stage = as_two_stage
        self.embed_dims = dims = encoder.embed_dims
        self.level_embed = nn.Parameter(torch.zeros(num_feature_levels, dims))
        if as_two_stage:
            self.memory_trans_fc = nn.Linear(dims, dims)
            self.memory_trans_norm = nn.LayerNorm(dims)
            self.pos_trans_fc = nn.Linear(dims * 2, dims * 2)
            self.pos_trans_norm = nn.LayerNorm(dims * 2)
        else:
            self.query_embedding = nn.Embedding(num_queries, dims * 2)
            self.reference_points_fc = nn.Linear(dims, 2)

    @classmethod
    def from_config(cls, cfg: DeformableDETRConfig, **derived: Any) -> DeformableDETR:
        backbone, neck = build_trunk(cfg)
        head = HEADS.build(cfg.bbox_head, train_cfg=cfg.train_cfg, test_cfg=cfg.test_cfg)
        return cls(backbone=backbone, neck=neck,
                   positional_encoding=POSITIONAL_ENCODINGS.build(cfg.positional_encoding),
                   encoder=DeformableDetrTransformerEncoder(cfg.encoder),
                   decoder=DeformableDetrTransformerDecoder(cfg.decoder), bbox_head=head,
                   num_queries=cfg.num_queries, num_feature_levels=cfg.num_feature_levels,
                   with_box_refine=cfg.with_box_refine, as_two_stage=cfg.as_two_stage,
                   **derived)

    def init_weights(self) -> None:
        """DETR's init (each part's own, Xavier-uniform on the transformer's matrices), then
        MMCV's for every deformable attention, Xavier on the query-side layers and N(0, 1)
        level embeddings (MMDetection's ``DeformableDETR.init_weights``)."""
        super().init_weights()
        for module in self.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.init_weights()
        if self.as_two_stage:
            nn.init.xavier_uniform_(self.memory_trans_fc.weight)
            nn.init.xavier_uniform_(self.pos_trans_fc.weight)
        else:
            xavier_init(self.reference_points_fc, distribution="uniform")
        nn.init.normal_(self.level_embed)

    def decoder_queries(self, memory: Tensor, inputs: MultiLevelTokens) -> DecoderQueries:
        """The decoder's queries, positions and references (module docstring)."""
        num = memory.shape[0]
        if not self.as_two_stage:
            query_pos, query = self.query_embedding.weight.split(self.embed_dims, dim=1)
            query_pos = query_pos[None].expand(num, -1, -1)  # (N, Q, D)
            query = query[None].expand(num, -1, -1)
            return DecoderQueries(query, query_pos, self.reference_points_fc(query_pos).sigmoid(),
                                  None)
        kept, proposals = encoder_proposals(memory, inputs.padding_mask, inputs.spatial_shapes)
        kept = self.memory_trans_norm(self.memory_trans_fc(kept))  # (N, S, D)
        logits, boxes_unact = self.bbox_head.proposals(kept, proposals)  # (N, S, K), (N, S, 4)
        top = logits[..., 0].topk(self.num_queries, dim=1)[1]  # (N, Q)
        top_boxes = boxes_unact.gather(1, top[..., None].expand(-1, -1, 4)).detach()  # (N, Q, 4)
        pos = self.pos_trans_norm(self.pos_trans_fc(
            proposal_pos_embed(top_boxes, num_pos_feats=self.embed_dims // 2)))  # (N, Q, 2D)
        query_pos, query = pos.split(self.embed_dims, dim=2)
        encoder_outputs = QueryOutputs(logits[None], boxes_unact.sigmoid()[None])
        return DecoderQueries(query, query_pos, top_boxes.sigmoid(), encoder_outputs)

    def run(self, images: Tensor,
            img_shapes: Tensor | None = None) -> tuple[QueryOutputs, QueryOutputs | None]:
        """(N, 3, H, W) images -> the head's outputs for every decoder layer and, two-stage,
        the encoder's proposals (what the loss reads)."""
        feats = self.extract_feat(images)
        inputs = multi_level_tokens(feats, img_shapes, (images.shape[-2], images.shape[-1]),
                                    self.positional_encoding, self.level_embed)
        memory = self.encoder(inputs)
        start = self.decoder_queries(memory, inputs)
        hidden, references = self.decoder(
            start.query, start.query_pos, memory, inputs.padding_mask, start.reference_points,
            inputs.spatial_shapes, inputs.valid_ratios,
            reg_branches=self.bbox_head.reg_branches if self.with_box_refine else None)
        sampled_around = [start.reference_points, *references[:-1]]  # each layer's input
        return self.bbox_head(hidden, sampled_around), start.encoder_outputs

    def query_outputs(self, images: Tensor, img_shapes: Tensor | None = None,
                      last_layer_only: bool = False) -> QueryOutputs:
        """The head's outputs for every decoder layer, or the last one's (L = 1)."""
        outputs = self.run(images, img_shapes)[0]
        return QueryOutputs(*(t[-1:] for t in outputs)) if last_layer_only else outputs

    def loss(self, images: ImageBatch, targets: DetTargets) -> dict[str, Tensor]:
        """The set losses of every decoder layer (``loss_*``, ``d{j}.loss_*``) and, two-stage,
        of the encoder's proposals (``enc_loss_*``)."""
        outputs, encoder_outputs = self.run(images.tensor, images.img_shapes)
        return self.bbox_head.loss(outputs, images, targets, encoder_outputs)
