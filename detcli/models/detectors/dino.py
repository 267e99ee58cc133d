"""DINO (Zhang et al. 2023, "DETR with Improved DeNoising Anchor Boxes"): two-stage, box-refining
Deformable DETR with contrastive denoising, mixed query selection and look-forward-twice.
MMDetection 3.3's ``DINO``: its module names (its checkpoints load strictly) and semantics.

N images, L = ``num_feature_levels`` maps, S tokens, E = ``embed_dims``, Q = ``num_queries``,
D denoising queries (training only), J decoder layers, K classes.

::

    images -> backbone -> neck (L maps) -> multi_level_tokens -> encoder -> memory (N, S, E)
      -> encoder_proposals: memory_trans_fc / memory_trans_norm of the memory, one box per
         token; the head's extra branches (index J) score it (N, S, K) and refine it
      -> mixed query selection: the top Q tokens by their best class score give the reference
         boxes (detached); the content queries are the learned query_embedding (Q, E)
      -> training: the denoising queries (CdnQueryGenerator: label_embedding of noisy GT
         classes, noisy GT boxes) go first, D + Q queries under the denoising attention mask
      -> DinoTransformerDecoder (positions from the reference boxes, look forward twice)
      -> DINOHead: logits (J, N, D + Q, K), boxes (J, N, D + Q, 4)

The loss (DINOHead) reads the matching queries, the encoder's top-Q proposals (``enc_loss_*``,
with the GT's classes) and the denoising queries (``dn_loss_*``); inference runs no denoising.
``with_box_refine`` and ``as_two_stage`` are always on (MMDetection asserts both).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.models.detectors.deformable_detr import DeformableDETR, DeformableDETRConfig
from detcli.models.detectors.single_stage import build_trunk
from detcli.models.query_heads.detr_head import DETRTestConfig
from detcli.models.transformer.attention import FFNConfig, MultiheadAttentionConfig
from detcli.models.transformer.deformable import (
    MultiScaleDeformableAttention,
    MultiScaleDeformableAttentionConfig,
)
from detcli.models.transformer.deformable_layers import (
    DeformableDecoderLayerConfig,
    DeformableDetrTransformerDecoderConfig,
    DeformableDetrTransformerEncoder,
    DeformableDetrTransformerEncoderConfig,
    DeformableEncoderLayerConfig,
    MultiLevelTokens,
    multi_level_tokens,
)
from detcli.models.transformer.denoising import (
    CdnQueryGenerator,
    CdnQueryGeneratorConfig,
    DenoisingQueries,
)
from detcli.models.transformer.dino_layers import DinoTransformerDecoder
from detcli.models.transformer.positional_encoding import SinePositionalEncodingConfig
from detcli.models.transformer.two_stage import encoder_proposals
from detcli.registry import DETECTORS, HEADS, POSITIONAL_ENCODINGS
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.queries import QueryOutputs


def dino_ffn() -> FFNConfig:
    return FFNConfig(feedforward_channels=2048, ffn_drop=0.0)


def dino_deformable_attn() -> MultiScaleDeformableAttentionConfig:
    return MultiScaleDeformableAttentionConfig(dropout=0.0)


def dino_encoder() -> DeformableDetrTransformerEncoderConfig:
    return DeformableDetrTransformerEncoderConfig(layer_cfg=DeformableEncoderLayerConfig(
        self_attn_cfg=dino_deformable_attn(), ffn_cfg=dino_ffn()))


def dino_decoder() -> DeformableDetrTransformerDecoderConfig:
    return DeformableDetrTransformerDecoderConfig(layer_cfg=DeformableDecoderLayerConfig(
        self_attn_cfg=MultiheadAttentionConfig(dropout=0.0),
        cross_attn_cfg=dino_deformable_attn(), ffn_cfg=dino_ffn()))


def dino_positional_encoding() -> SinePositionalEncodingConfig:
    return SinePositionalEncodingConfig(num_feats=128, normalize=True, offset=0.0,
                                        temperature=20)


def dino_test_cfg() -> DETRTestConfig:
    return DETRTestConfig(max_per_img=300)


class DINOConfig(DeformableDETRConfig):
    """DeformableDETR's settings with DINO's defaults (the dino-4scale_r50 values), both
    variants fixed on, and ``dn_cfg`` (the denoising queries)."""

    type: Literal["DINO"] = "DINO"  # type: ignore[assignment]
    encoder: DeformableDetrTransformerEncoderConfig = Field(default_factory=dino_encoder)
    decoder: DeformableDetrTransformerDecoderConfig = Field(default_factory=dino_decoder)
    positional_encoding: SinePositionalEncodingConfig = Field(
        default_factory=dino_positional_encoding)
    num_queries: int = Field(900, ge=1)
    with_box_refine: Literal[True] = True  # type: ignore[assignment]
    as_two_stage: Literal[True] = True  # type: ignore[assignment]
    dn_cfg: CdnQueryGeneratorConfig = Field(default_factory=CdnQueryGeneratorConfig)
    test_cfg: DETRTestConfig = Field(default_factory=dino_test_cfg)

    @model_validator(mode="after")
    def _every_layer_out(self) -> DINOConfig:
        if not self.decoder.return_intermediate:
            raise ValueError("model.decoder.return_intermediate must be true for DINO: its "
                             "losses read every decoder layer")
        return self


@DETECTORS.register(DINOConfig)
class DINO(DeformableDETR):
    """Backbone, neck, deformable encoder, DINO decoder, denoising queries and DINOHead
    (module docstring)."""

    def __init__(self, *, backbone: nn.Module, neck: nn.Module | None,
                 positional_encoding: nn.Module, encoder: DeformableDetrTransformerEncoder,
                 decoder: DinoTransformerDecoder, bbox_head: nn.Module,
                 dn_query_generator: CdnQueryGenerator, num_queries: int = 900,
                 num_feature_levels: int = 4) -> None:
        nn.Module.__init__(self)
        self.backbone = backbone
        self.neck = neck
        self.positional_encoding = positional_encoding
        self.encoder = encoder
        self.decoder = decoder
        self.bbox_head = bbox_head
        self.dn_query_generator = dn_query_generator
        self.num_queries = num_queries
        self.num_feature_levels = num_feature_levels
        self.with_box_refine = self.as_two_stage = True
        self.embed_dims = dims = encoder.embed_dims
        self.query_embedding = nn.Embedding(num_queries, dims)  # content queries only
        self.level_embed = nn.Parameter(torch.zeros(num_feature_levels, dims))
        self.memory_trans_fc = nn.Linear(dims, dims)
        self.memory_trans_norm = nn.LayerNorm(dims)

    @classmethod
    def from_config(cls, cfg: DINOConfig, **derived: Any) -> DINO:
        backbone, neck = build_trunk(cfg)
        head = HEADS.build(cfg.bbox_head, train_cfg=cfg.train_cfg, test_cfg=cfg.test_cfg)
        generator = CdnQueryGenerator.from_config(
            cfg.dn_cfg, num_classes=cfg.bbox_head.num_classes,
            embed_dims=cfg.decoder.embed_dims, num_matching_queries=cfg.num_queries)
        return cls(backbone=backbone, neck=neck,
                   positional_encoding=POSITIONAL_ENCODINGS.build(cfg.positional_encoding),
                   encoder=DeformableDetrTransformerEncoder(cfg.encoder),
                   decoder=DinoTransformerDecoder(cfg.decoder), bbox_head=head,
                   dn_query_generator=generator, num_queries=cfg.num_queries,
                   num_feature_levels=cfg.num_feature_levels, **derived)

    def init_weights(self) -> None:
        """DETR's init, MMCV's for every deformable attention, Xavier-uniform on
        ``memory_trans_fc`` and ``query_embedding``, N(0, 1) level embeddings
        (MMDetection's ``DINO.init_weights``)."""
        super(DeformableDETR, self).init_weights()
        for module in self.modules():
            if isinstance(module, MultiScaleDeformableAttention):
                module.init_weights()
        nn.init.xavier_uniform_(self.memory_trans_fc.weight)
        nn.init.xavier_uniform_(self.query_embedding.weight)
        nn.init.normal_(self.level_embed)

    def select_queries(self, memory: Tensor,
                       inputs: MultiLevelTokens) -> tuple[Tensor, QueryOutputs]:
        """Mixed query selection: the memory (N, S, E) -> the top-Q proposals' boxes in
        logit space (N, Q, 4), detached (the reference boxes), and their class logits and
        boxes (1, N, Q, K) / (1, N, Q, 4) for ``enc_loss_*``."""
        kept, proposals = encoder_proposals(memory, inputs.padding_mask, inputs.spatial_shapes)
        kept = self.memory_trans_norm(self.memory_trans_fc(kept))  # (N, S, E)
        logits, boxes_unact = self.bbox_head.proposals(kept, proposals)  # (N, S, K), (N, S, 4)
        top = logits.max(-1)[0].topk(self.num_queries, dim=1)[1]  # (N, Q) by the best class
        top_logits = logits.gather(1, top[..., None].expand(-1, -1, logits.shape[-1]))
        top_boxes = boxes_unact.gather(1, top[..., None].expand(-1, -1, 4))  # (N, Q, 4)
        return top_boxes.detach(), QueryOutputs(top_logits[None], top_boxes.sigmoid()[None])

    def run(self, images: Tensor, img_shapes: Tensor | None = None,
            denoising: DenoisingQueries | None = None) -> tuple[QueryOutputs, QueryOutputs]:
        """(N, 3, H, W) images (with the denoising queries in training) -> the head's outputs
        for every decoder layer (J, N, D + Q, ...) and the encoder's top-Q proposals."""
        feats = self.extract_feat(images)
        inputs = multi_level_tokens(feats, img_shapes, (images.shape[-2], images.shape[-1]),
                                    self.positional_encoding, self.level_embed)
        memory = self.encoder(inputs)
        references, encoder_outputs = self.select_queries(memory, inputs)
        query = self.query_embedding.weight[None].expand(memory.shape[0], -1, -1)  # (N, Q, E)
        attn_mask = None
        if denoising is not None:
            query = torch.cat((denoising.label_query.to(query.dtype), query), 1)
            references = torch.cat((denoising.bbox_query.to(references.dtype), references), 1)
            attn_mask = denoising.attn_mask
        hidden, boxes = self.decoder(query, memory, inputs.padding_mask, references.sigmoid(),
                                     inputs.spatial_shapes, inputs.valid_ratios,
                                     self.bbox_head.reg_branches, self_attn_mask=attn_mask)
        if denoising is not None and denoising.meta.num_queries == 0:
            # no GT in the batch: the label embedding still takes part (DDP expects every
            # parameter to get a gradient), with weight 0 (MMDetection's forward_decoder)
            hidden = hidden + self.dn_query_generator.label_embedding.weight[0, 0] * 0.0
        return self.bbox_head(hidden, list(boxes[:-1])), encoder_outputs

    def query_outputs(self, images: Tensor, img_shapes: Tensor | None = None,
                      last_layer_only: bool = False) -> QueryOutputs:
        """(N, 3, H, W) images -> the head's outputs (no denoising) for every decoder layer,
        or the last one's (L = 1)."""
        outputs = self.run(images, img_shapes)[0]
        if last_layer_only:
            return QueryOutputs(outputs.cls_logits[-1:], outputs.boxes[-1:])
        return outputs

    def loss(self, images: ImageBatch, targets: DetTargets) -> dict[str, Tensor]:
        """The matching, encoder and denoising losses (DINOHead, module docstring)."""
        denoising = self.dn_query_generator(targets.boxes, targets.labels, images.img_shapes)
        outputs, encoder_outputs = self.run(images.tensor, images.img_shapes, denoising)
        return self.bbox_head.loss(outputs, images, targets, encoder_outputs, denoising.meta)
