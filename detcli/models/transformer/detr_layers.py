"""DETR's transformer: post-norm encoder and decoder layers, MMDetection 3.3 names and wiring.

N images, S = h * w encoder tokens (the flattened feature map), Q queries, D = ``embed_dims``,
L decoder layers.

- Encoder layer: ``self_attn`` (tokens attend to tokens, positions added to query and key,
  padded tokens masked out as keys), ``norms.0``, ``ffn``, ``norms.1`` -- each sublayer a
  residual block followed by its LayerNorm (post-norm, as DETR).
- Decoder layer: ``self_attn`` among the queries, ``norms.0``, ``cross_attn`` from the queries
  to the encoder's memory (the memory's positions added to its keys, padded tokens masked),
  ``norms.1``, ``ffn``, ``norms.2``.
- :class:`DetrTransformerDecoder` applies one more LayerNorm (``post_norm``) to the output of
  every layer when ``return_intermediate`` (L, N, Q, D) -- the auxiliary losses read each layer
  -- or to the last one only (1, N, Q, D).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.models.transformer.attention import (
    FFN,
    FFNConfig,
    MultiheadAttention,
    MultiheadAttentionConfig,
)
from detcli.registry import fields_of


class DetrEncoderLayerConfig(Schema):
    self_attn_cfg: MultiheadAttentionConfig = Field(default_factory=MultiheadAttentionConfig)
    ffn_cfg: FFNConfig = Field(default_factory=FFNConfig)


class DetrDecoderLayerConfig(Schema):
    self_attn_cfg: MultiheadAttentionConfig = Field(default_factory=MultiheadAttentionConfig)
    cross_attn_cfg: MultiheadAttentionConfig = Field(default_factory=MultiheadAttentionConfig)
    ffn_cfg: FFNConfig = Field(default_factory=FFNConfig)


class DetrTransformerEncoderConfig(Schema):
    num_layers: int = Field(6, ge=1)
    layer_cfg: DetrEncoderLayerConfig = Field(default_factory=DetrEncoderLayerConfig)

    @property
    def embed_dims(self) -> int:
        return self.layer_cfg.self_attn_cfg.embed_dims


class DetrTransformerDecoderConfig(Schema):
    num_layers: int = Field(6, ge=1)
    layer_cfg: DetrDecoderLayerConfig = Field(default_factory=DetrDecoderLayerConfig)
    return_intermediate: bool = True

    @property
    def embed_dims(self) -> int:
        return self.layer_cfg.self_attn_cfg.embed_dims


class DetrTransformerEncoderLayer(nn.Module):
    """Self-attention and FFN, each followed by a LayerNorm (module docstring)."""

    def __init__(self, cfg: DetrEncoderLayerConfig) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(**fields_of(cfg.self_attn_cfg))
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**fields_of(cfg.ffn_cfg))
        self.norms = nn.ModuleList(nn.LayerNorm(self.embed_dims) for _ in range(2))

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """Tokens (N, S, D), their positions (N, S, D), padding (N, S) -> (N, S, D)."""
        query = self.self_attn(query, query_pos=query_pos, key_pos=query_pos,
                               key_padding_mask=key_padding_mask)
        query = self.norms[0](query)
        return self.norms[1](self.ffn(query))


class DetrTransformerDecoderLayer(nn.Module):
    """Self-attention, cross-attention and FFN, each followed by a LayerNorm."""

    def __init__(self, cfg: DetrDecoderLayerConfig) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(**fields_of(cfg.self_attn_cfg))
        self.cross_attn = MultiheadAttention(**fields_of(cfg.cross_attn_cfg))
        self.embed_dims = self.self_attn.embed_dims
        self.ffn = FFN(**fields_of(cfg.ffn_cfg))
        self.norms = nn.ModuleList(nn.LayerNorm(self.embed_dims) for _ in range(3))

    def forward(self, query: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor,
                memory_padding_mask: Tensor | None) -> Tensor:
        """Queries (N, Q, D) and their positions, memory (N, S, D) and its positions and
        padding (N, S) -> (N, Q, D)."""
        query = self.norms[0](self.self_attn(query, query_pos=query_pos, key_pos=query_pos))
        query = self.cross_attn(query, key=memory, value=memory, query_pos=query_pos,
                                key_pos=memory_pos, key_padding_mask=memory_padding_mask)
        query = self.norms[1](query)
        return self.norms[2](self.ffn(query))


class DetrTransformerEncoder(nn.Module):
    """``num_layers`` encoder layers (``layers.i``)."""

    def __init__(self, cfg: DetrTransformerEncoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DetrTransformerEncoderLayer(cfg.layer_cfg)
                                    for _ in range(cfg.num_layers))
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Tensor | None) -> Tensor:
        """(N, S, D) tokens -> (N, S, D) memory."""
        for layer in self.layers:
            query = layer(query, query_pos, key_padding_mask)
        return query


class DetrTransformerDecoder(nn.Module):
    """``num_layers`` decoder layers and the shared ``post_norm`` (module docstring)."""

    def __init__(self, cfg: DetrTransformerDecoderConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DetrTransformerDecoderLayer(cfg.layer_cfg)
                                    for _ in range(cfg.num_layers))
        self.embed_dims = self.layers[0].embed_dims
        self.post_norm = nn.LayerNorm(self.embed_dims)
        self.return_intermediate = cfg.return_intermediate

    def forward(self, query: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor,
                memory_padding_mask: Tensor | None) -> Tensor:
        """-> (L, N, Q, D) normalised outputs of every layer (``return_intermediate``), else
        (1, N, Q, D) of the last."""
        intermediate = []
        for layer in self.layers:
            query = layer(query, memory, query_pos, memory_pos, memory_padding_mask)
            if self.return_intermediate:
                intermediate.append(self.post_norm(query))
        if self.return_intermediate:
            return torch.stack(intermediate)
        return self.post_norm(query)[None]
