"""DETR (Carion et al. 2020): a CNN, a transformer encoder-decoder and a set of learned
queries, each predicting one object; trained with a one-to-one (Hungarian) matching, predicting
without NMS. MMDetection 3.3's ``DETR``: its module names, so its checkpoints load strictly.

N images, (H, W) the padded batch, C = D = ``embed_dims`` channels, (h, w) the last feature
map, S = h * w tokens, Q = ``num_queries``, L decoder layers.

::

    images (N, 3, H, W) -> backbone -> neck (ChannelMapper: 1x1 conv to D) -> last map (N, D, h, w)
    padding mask (N, h, w) from img_shapes (masks.py)  -> positional_encoding -> (N, D, h, w)
    tokens (N, S, D) + positions + mask -> encoder -> memory (N, S, D)
    queries: zeros (N, Q, D), positions query_embedding.weight (Q, D)
        -> decoder (cross-attention to the memory) -> hidden states (L, N, Q, D)
        -> bbox_head (DETRHead) -> QueryOutputs: logits (L, N, Q, C), boxes (L, N, Q, 4)

The config connects the widths once: the neck's output channels, the encoder's and decoder's
``embed_dims`` and the positional encoding's ``2 * num_feats`` must agree (validation names
the ones that do not), and ``bbox_head.embed_dims`` is derived from the decoder.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from detcli.config.schema import Maybe, Schema, derive_or_check
from detcli.models.channels import BackboneSchema, NeckSchema, trunk_channels
from detcli.models.detectors.single_stage import TrunkDetector, build_trunk
from detcli.models.protocols import DenseStageConfig, DetectorStages, QueryHead
from detcli.models.query_heads.detr_head import DETRTestConfig, DETRTrainConfig
from detcli.models.transformer.detr_layers import (
    DetrTransformerDecoder,
    DetrTransformerDecoderConfig,
    DetrTransformerEncoder,
    DetrTransformerEncoderConfig,
)
from detcli.models.transformer.masks import feature_padding_mask
from detcli.models.transformer.positional_encoding import (
    PositionalEncodingSchema,
    SinePositionalEncodingConfig,
)
from detcli.registry import BACKBONES, DETECTORS, HEADS, NECKS, POSITIONAL_ENCODINGS, HeadConfig
from detcli.structures.batch import DetTargets, ImageBatch
from detcli.structures.dense import Candidates
from detcli.structures.detections import DetectionBatch
from detcli.structures.queries import QueryOutputs


def detr_positional_encoding() -> SinePositionalEncodingConfig:
    return SinePositionalEncodingConfig(num_feats=128, normalize=True)


class DETRConfig(Schema):
    type: Literal["DETR"] = "DETR"
    backbone: Annotated[BackboneSchema, BACKBONES]
    neck: Maybe[Annotated[NeckSchema, NECKS]] = None
    encoder: DetrTransformerEncoderConfig = Field(default_factory=DetrTransformerEncoderConfig)
    decoder: DetrTransformerDecoderConfig = Field(default_factory=DetrTransformerDecoderConfig)
    positional_encoding: Annotated[PositionalEncodingSchema, POSITIONAL_ENCODINGS] = Field(
        default_factory=detr_positional_encoding)
    num_queries: int = Field(100, ge=1)
    bbox_head: HeadConfig
    train_cfg: Maybe[DETRTrainConfig] = Field(default_factory=DETRTrainConfig)
    test_cfg: DETRTestConfig = Field(default_factory=DETRTestConfig)

    @model_validator(mode="after")
    def _connect_widths(self) -> DETRConfig:
        channels, source = trunk_channels(self.backbone, self.neck)
        widths = {
            source: channels,
            "model.encoder (self_attn_cfg.embed_dims)": self.encoder.embed_dims,
            "model.decoder (self_attn_cfg.embed_dims)": self.decoder.embed_dims,
            f"model.positional_encoding (2 x num_feats {self.positional_encoding.num_feats})":
                self.positional_encoding.out_channels(),
        }
        if len(set(widths.values())) != 1:
            listed = ", ".join(f"{where} = {value}" for where, value in widths.items())
            raise ValueError(f"DETR's widths must agree: {listed}")
        derive_or_check(self.bbox_head, "embed_dims", self.decoder.embed_dims,
                        "model.decoder (embed_dims)", "model.bbox_head.embed_dims")
        return self

    def dense_stage(self) -> DenseStageConfig:
        """Where the head sits (``model.bbox_head``, a query head: no priors to assign)."""
        return DenseStageConfig(head=self.bbox_head, train_cfg=self.train_cfg,
                                head_key="model.bbox_head", train_key="model.train_cfg",
                                two_stage=False)


class QueryDetector(TrunkDetector, metaclass=ABCMeta):
    """What DETR and its descendants share: a trunk, a transformer, a :class:`QueryHead` and
    top-k predictions without NMS. A subclass provides ``query_outputs`` (and its own
    ``loss`` when the head reads more than the queries' outputs); predictions, test-time
    augmentation and the ONNX graph (export/query_graph.py) all go through ``query_outputs``."""

    num_classes_key: ClassVar[str] = "model.bbox_head.num_classes"
    bbox_head: QueryHead

    @property
    def stages(self) -> DetectorStages:
        """No dense head: a query head predicts one object per query (no priors, no NMS)."""
        return DetectorStages(dense_head=None, dense_key="model.bbox_head")

    def init_weights(self) -> None:
        """Each part's own init, then Xavier-uniform on every matrix of the encoder and
        decoder (MMDetection's ``DETR.init_weights``)."""
        super().init_weights()
        for coder in (self.encoder, self.decoder):
            for param in coder.parameters():
                if param.dim() > 1:
                    nn.init.xavier_uniform_(param)

    @property
    def num_classes(self) -> int:
        return int(self.bbox_head.num_classes)

    @property
    def detection_test_cfg(self) -> Any:
        """The head's ``test_cfg`` (``max_per_img``; no NMS)."""
        return self.bbox_head.test_cfg

    @abstractmethod
    def query_outputs(self, images: Tensor, img_shapes: Tensor | None = None,
                      last_layer_only: bool = False) -> QueryOutputs:
        """(N, 3, H, W) images and their shapes (N, 2) (None: every image fills the batch) ->
        the head's outputs for every decoder layer, or the last one's (L = 1)."""

    def forward(self, images: Tensor, img_shapes: Tensor | None = None) -> QueryOutputs:
        """(N, 3, H, W) images -> the head's outputs for every decoder layer."""
        return self.query_outputs(images, img_shapes)

    def loss(self, images: ImageBatch, targets: DetTargets) -> dict[str, Tensor]:
        """The set losses of every decoder layer (``loss_*`` and ``d{i}.loss_*``)."""
        return self.bbox_head.loss(self(images.tensor, images.img_shapes), images, targets)

    def _last_layer(self, images: ImageBatch) -> QueryOutputs:
        return self.query_outputs(images.tensor, images.img_shapes, last_layer_only=True)

    @torch.no_grad()
    def predict_batch(self, images: ImageBatch, rescale: bool = True) -> DetectionBatch:
        """Top-k detections padded to (N, M), in original-image pixels with ``rescale``."""
        return self.bbox_head.predict(self._last_layer(images), images, rescale=rescale)

    @torch.no_grad()
    def candidates(self, images: ImageBatch) -> Candidates:
        """The top-k boxes in network-input pixels (what test-time augmentation merges)."""
        return self.bbox_head.candidates(self._last_layer(images), images.img_shapes)


@DETECTORS.register(DETRConfig)
class DETR(QueryDetector):
    """Backbone, neck, transformer and query head; see the module docstring."""

    def __init__(self, *, backbone: nn.Module, neck: nn.Module | None,
                 positional_encoding: nn.Module, encoder: DetrTransformerEncoder,
                 decoder: DetrTransformerDecoder, bbox_head: nn.Module,
                 num_queries: int = 100) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.positional_encoding = positional_encoding
        self.encoder = encoder
        self.decoder = decoder
        self.bbox_head: QueryHead = bbox_head
        self.num_queries = num_queries
        self.embed_dims = encoder.embed_dims
        self.query_embedding = nn.Embedding(num_queries, self.embed_dims)

    @classmethod
    def from_config(cls, cfg: DETRConfig, **derived: Any) -> DETR:
        backbone, neck = build_trunk(cfg)
        head = HEADS.build(cfg.bbox_head, train_cfg=cfg.train_cfg, test_cfg=cfg.test_cfg)
        return cls(backbone=backbone, neck=neck,
                   positional_encoding=POSITIONAL_ENCODINGS.build(cfg.positional_encoding),
                   encoder=DetrTransformerEncoder(cfg.encoder),
                   decoder=DetrTransformerDecoder(cfg.decoder), bbox_head=head,
                   num_queries=cfg.num_queries, **derived)

    def transformer(self, feat: Tensor, img_shapes: Tensor | None,
                    batch_shape: tuple[int, int]) -> Tensor:
        """Last feature map (N, D, h, w), image shapes (N, 2) (None: every image fills the
        batch) and the padded batch's (H, W) -> decoder hidden states (L, N, Q, D)."""
        num, _, h, w = feat.shape
        if img_shapes is None:
            mask = torch.zeros((num, h, w), dtype=torch.bool, device=feat.device)
        else:
            mask = feature_padding_mask(img_shapes, batch_shape, (h, w))  # (N, h, w)
        pos = self.positional_encoding(mask).to(feat.dtype)  # (N, D, h, w)
        tokens = feat.flatten(2).transpose(1, 2)  # (N, S, D)
        pos = pos.flatten(2).transpose(1, 2)  # (N, S, D)
        key_mask = mask.flatten(1)  # (N, S)
        memory = self.encoder(tokens, pos, key_mask)
        query_pos = self.query_embedding.weight[None].expand(num, -1, -1)  # (N, Q, D)
        query = torch.zeros_like(query_pos)
        return self.decoder(query, memory, query_pos, pos, key_mask)

    def hidden_states(self, images: Tensor, img_shapes: Tensor | None = None) -> Tensor:
        """(N, 3, H, W) images -> decoder hidden states (L, N, Q, D)."""
        feats = self.extract_feat(images)
        return self.transformer(feats[-1], img_shapes, (images.shape[-2], images.shape[-1]))

    def query_outputs(self, images: Tensor, img_shapes: Tensor | None = None,
                      last_layer_only: bool = False) -> QueryOutputs:
        """The head on every decoder layer, or on the last one only (what predictions read)."""
        hidden = self.hidden_states(images, img_shapes)
        return self.bbox_head(hidden[-1:] if last_layer_only else hidden)
