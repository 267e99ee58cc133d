"""The two sublayers of a transformer layer: multi-head attention and a feed-forward network,
with MMCV's residual wiring and parameter names (so MMDetection checkpoints load as they are).

N images, Q queries, S keys/values, D = ``embed_dims``; every tensor is batch-first (N, Q, D).

- :class:`MultiheadAttention`: ``attn`` is a ``torch.nn.MultiheadAttention`` (state-dict keys
  ``attn.in_proj_weight``, ``attn.in_proj_bias``, ``attn.out_proj.weight`` ...). The positional
  embeddings are added to the query and the key (not the value); the output is
  ``identity + dropout(attn(q + q_pos, k + k_pos, v))``, ``identity`` the query without its
  position. ``dropout`` is MMCV's single rate: it drops attention weights and the output.
- :class:`FFN`: ``num_fcs`` linear layers (``layers.0.0``, ..., the last ``layers.<n-1>``),
  the activation and dropout after each but the last, plus the input (``add_identity``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.models.layers import ActConfig, build_activation


class MultiheadAttentionConfig(Schema):
    """MMCV's ``MultiheadAttention`` settings; ``batch_first`` is always true in det."""

    embed_dims: int = Field(256, ge=1)
    num_heads: int = Field(8, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    batch_first: Literal[True] = True

    @field_validator("num_heads")
    @classmethod
    def _divides(cls, value: int, info) -> int:
        dims = info.data.get("embed_dims")
        if dims is not None and dims % value:
            raise ValueError(f"num_heads {value} must divide embed_dims {dims}")
        return value


class FFNConfig(Schema):
    """MMCV's ``FFN`` settings."""

    embed_dims: int = Field(256, ge=1)
    feedforward_channels: int = Field(1024, ge=1)
    num_fcs: int = Field(2, ge=2)
    ffn_drop: float = Field(0.0, ge=0, lt=1)
    act_cfg: ActConfig = Field(default_factory=ActConfig)
    add_identity: bool = True


class MultiheadAttention(nn.Module):
    """Attention with positional embeddings and a residual connection (module docstring)."""

    def __init__(self, *, embed_dims: int = 256, num_heads: int = 8,
                 dropout: float = 0.0, batch_first: Literal[True] = True) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout, batch_first=True)
        self.dropout_layer = nn.Dropout(dropout)

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                query_pos: Tensor | None = None, key_pos: Tensor | None = None,
                attn_mask: Tensor | None = None,
                key_padding_mask: Tensor | None = None) -> Tensor:
        """query (N, Q, D), key and value (N, S, D) (default: the query, and the key), their
        positions (key_pos defaults to query_pos when the shapes agree), key_padding_mask
        (N, S) bool True on keys to leave out -> (N, Q, D)."""
        key = query if key is None else key
        value = key if value is None else value
        if key_pos is None and query_pos is not None and query_pos.shape == key.shape:
            key_pos = query_pos
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        out = self.attn(q, k, value, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                        need_weights=False)[0]
        return query + self.dropout_layer(out)


class FFN(nn.Module):
    """Linear layers with activations and an optional residual (module docstring)."""

    def __init__(self, *, embed_dims: int = 256, feedforward_channels: int = 1024,
                 num_fcs: int = 2, ffn_drop: float = 0.0, act_cfg: ActConfig | None = None,
                 add_identity: bool = True) -> None:
        super().__init__()
        act_cfg = act_cfg or ActConfig()
        layers: list[nn.Module] = []
        in_channels = embed_dims
        for _ in range(num_fcs - 1):
            layers.append(nn.Sequential(nn.Linear(in_channels, feedforward_channels),
                                        build_activation(act_cfg.type, act_cfg.inplace),
                                        nn.Dropout(ffn_drop)))
            in_channels = feedforward_channels
        layers += [nn.Linear(feedforward_channels, embed_dims), nn.Dropout(ffn_drop)]
        self.layers = nn.Sequential(*layers)
        self.add_identity = add_identity

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D)."""
        out = self.layers(x)
        return x + out if self.add_identity else out
