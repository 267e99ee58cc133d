"""Transformer building blocks: positional encodings, attention and FFN sublayers (and
multi-scale deformable attention), DETR's encoder and decoder, padding masks. Importing it
registers the positional encodings and the attention layers."""

from detcli.models.transformer.attention import (
    FFN,
    FFNConfig,
    MultiheadAttention,
    MultiheadAttentionConfig,
)
from detcli.models.transformer.deformable import (
    MultiScaleDeformableAttention,
    MultiScaleDeformableAttentionConfig,
    multi_scale_deformable_attn,
)
from detcli.models.transformer.detr_layers import (
    DetrTransformerDecoder,
    DetrTransformerDecoderConfig,
    DetrTransformerEncoder,
    DetrTransformerEncoderConfig,
)
from detcli.models.transformer.masks import feature_padding_mask, input_padding_mask
from detcli.models.transformer.positional_encoding import (
    LearnedPositionalEncoding,
    LearnedPositionalEncodingConfig,
    SinePositionalEncoding,
    SinePositionalEncodingConfig,
)

__all__ = ["FFN", "FFNConfig", "DetrTransformerDecoder", "DetrTransformerDecoderConfig",
           "DetrTransformerEncoder", "DetrTransformerEncoderConfig", "LearnedPositionalEncoding",
           "LearnedPositionalEncodingConfig", "MultiScaleDeformableAttention",
           "MultiScaleDeformableAttentionConfig", "MultiheadAttention", "MultiheadAttentionConfig",
           "SinePositionalEncoding", "SinePositionalEncodingConfig", "feature_padding_mask",
           "input_padding_mask", "multi_scale_deformable_attn"]
