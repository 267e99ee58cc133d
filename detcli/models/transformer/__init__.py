"""Transformer building blocks: positional encodings, attention and FFN sublayers, DETR's
encoder and decoder, padding masks. Importing it registers the positional encodings."""

from detcli.models.transformer.attention import (
    FFN,
    FFNConfig,
    MultiheadAttention,
    MultiheadAttentionConfig,
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
           "LearnedPositionalEncodingConfig", "MultiheadAttention", "MultiheadAttentionConfig",
           "SinePositionalEncoding", "SinePositionalEncodingConfig", "feature_padding_mask",
           "input_padding_mask"]
