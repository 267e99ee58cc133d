"""Positional encodings at known positions, and the padding masks they read."""

from __future__ import annotations

import math

import torch

from detcli.models.transformer.masks import feature_padding_mask, input_padding_mask
from detcli.models.transformer.positional_encoding import (
    LearnedPositionalEncoding,
    SinePositionalEncoding,
)


def test_sine_encoding_at_a_known_position():
    # num_feats 4, temperature 10000: the divisors are 1, 1, 100, 100
    enc = SinePositionalEncoding(num_feats=4, temperature=10000, normalize=False)
    pos = enc(torch.zeros(1, 2, 3, dtype=torch.bool))  # (1, 8, 2, 3)
    assert pos.shape == (1, 8, 2, 3)
    y, x = 2.0, 3.0  # row 1, column 2: 1-based counts of valid pixels
    expected = [math.sin(y), math.cos(y), math.sin(y / 100), math.cos(y / 100),
                math.sin(x), math.cos(x), math.sin(x / 100), math.cos(x / 100)]
    torch.testing.assert_close(pos[0, :, 1, 2], torch.tensor(expected))


def test_sine_normalisation_counts_only_the_valid_pixels():
    # the last column is padding: the valid extent (3 columns) maps to [0, scale]
    mask = torch.tensor([[[False, False, False, True]]])  # (1, 1, 4)
    enc = SinePositionalEncoding(num_feats=2, normalize=True, offset=0.0, eps=1e-6)
    pos = enc(mask)  # (1, 4, 1, 4): [sin y, cos y, sin x, cos x]
    x_embed = torch.tensor([1, 2, 3, 3]) / (3 + 1e-6) * 2 * math.pi
    torch.testing.assert_close(pos[0, 2, 0], x_embed.sin())
    torch.testing.assert_close(pos[0, 3, 0], x_embed.cos())
    y_embed = torch.tensor(1.0) / (1 + 1e-6) * 2 * math.pi  # one row: y = 2 pi
    torch.testing.assert_close(pos[0, 0, 0], y_embed.sin().expand(4))


def test_sine_offset_shifts_before_normalising():
    enc = SinePositionalEncoding(num_feats=2, normalize=True, offset=-0.5, scale=1.0)
    pos = enc(torch.zeros(1, 1, 2, dtype=torch.bool))
    x_embed = (torch.tensor([1.0, 2.0]) - 0.5) / (2 + 1e-6)
    torch.testing.assert_close(pos[0, 2, 0], x_embed.sin())


def test_learned_encoding_is_column_then_row():
    enc = LearnedPositionalEncoding(num_feats=2, row_num_embed=3, col_num_embed=4)
    with torch.no_grad():
        enc.col_embed.weight.copy_(torch.arange(8.0).reshape(4, 2))
        enc.row_embed.weight.copy_(100 + torch.arange(6.0).reshape(3, 2))
    pos = enc(torch.zeros(2, 3, 4, dtype=torch.bool))  # (2, 4, 3, 4)
    assert pos.shape == (2, 4, 3, 4)
    # row 2, column 1: col_embed[1] = (2, 3), then row_embed[2] = (104, 105)
    torch.testing.assert_close(pos[1, :, 2, 1], torch.tensor([2.0, 3.0, 104.0, 105.0]))


def test_input_padding_mask_marks_pixels_outside_each_image():
    mask = input_padding_mask(torch.tensor([[4, 6], [2, 3]]), (4, 6))  # (2, 4, 6)
    assert not mask[0].any()
    expected = torch.ones(4, 6, dtype=torch.bool)
    expected[:2, :3] = False
    assert torch.equal(mask[1], expected)


def test_feature_padding_mask_is_the_nearest_resized_input_mask():
    # (4, 6) -> (2, 3): nearest picks input rows 0, 2 and columns 0, 2, 4
    mask = feature_padding_mask(torch.tensor([[4, 6], [2, 3]]), (4, 6), (2, 3))
    assert mask.dtype == torch.bool and mask.shape == (2, 2, 3)
    assert not mask[0].any()
    assert mask[1].tolist() == [[False, False, True], [True, True, True]]
