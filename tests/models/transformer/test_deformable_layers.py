"""Deformable DETR's transformer pieces with hand-computed values: valid ratios, the
encoder's reference points, the multi-level tokens, the decoder's reference refinement."""

from __future__ import annotations

import math

import torch

from detcli.models.transformer.deformable_layers import (
    DeformableDetrTransformerDecoder,
    DeformableDetrTransformerDecoderConfig,
    DeformableDetrTransformerEncoder,
    DeformableDetrTransformerEncoderConfig,
    encoder_reference_points,
    multi_level_tokens,
    refine,
    valid_ratios,
)
from detcli.models.transformer.positional_encoding import SinePositionalEncoding


def test_valid_ratios_read_the_first_row_and_column():
    mask = torch.ones(1, 4, 5, dtype=torch.bool)
    mask[0, :3, :2] = False  # a 3 x 2 image in a 4 x 5 map
    torch.testing.assert_close(valid_ratios(mask), torch.tensor([[2 / 5, 3 / 4]]))


def test_encoder_reference_points_are_pixel_centres_of_the_valid_extent():
    """Level 0 is 2 x 4, level 1 is 1 x 2; the image covers half of each map's width."""
    ratios = torch.tensor([[[0.5, 1.0], [0.5, 1.0]]])  # (N, L, 2) (w, h)
    ref = encoder_reference_points([(2, 4), (1, 2)], ratios)
    assert ref.shape == (1, 2 * 4 + 1 * 2, 2, 2)
    # token (row 0, col 1) of level 0: centre (1.5, 0.5) over the valid 2 x 2 -> (0.75, 0.25),
    # times the ratios -> (0.375, 0.25) on both levels
    assert ref[0, 1].tolist() == [[0.375, 0.25], [0.375, 0.25]]
    # token (row 0, col 1) of level 1: centre (1.5, 0.5) over the valid 1 x 1 -> (1.5, 0.5)
    assert ref[0, 9].tolist() == [[0.75, 0.5], [0.75, 0.5]]


def test_multi_level_tokens_concatenate_levels_with_masks_and_level_embeddings():
    feats = [torch.randn(2, 8, 4, 6), torch.randn(2, 8, 2, 3)]
    img_shapes = torch.tensor([[32, 48], [16, 24]])  # the second image: half of each side
    embed = torch.randn(2, 8)
    pe = SinePositionalEncoding(num_feats=4, normalize=True, offset=-0.5)
    inputs = multi_level_tokens(feats, img_shapes, (32, 48), pe, embed)
    assert inputs.tokens.shape == inputs.pos.shape == (2, 24 + 6, 8)
    assert inputs.spatial_shapes == ((4, 6), (2, 3))
    assert torch.equal(inputs.tokens[:, 24:], feats[1].flatten(2).transpose(1, 2))
    assert inputs.padding_mask[0].sum() == 0
    assert inputs.padding_mask[1, :24].sum() == 24 - 2 * 3  # 2 x 3 of the 4 x 6 valid
    torch.testing.assert_close(inputs.valid_ratios[1], torch.tensor([[0.5, 0.5], [2 / 3, 0.5]]))
    pos0 = pe(torch.zeros(2, 4, 6, dtype=torch.bool))[0].flatten(1).T  # image 0, level 0
    torch.testing.assert_close(inputs.pos[0, :24], pos0 + embed[0])
    assert multi_level_tokens(feats, None, (32, 48), pe, embed).padding_mask is None


def test_refine_moves_references_in_logit_space():
    logit = math.log(0.25 / 0.75)
    boxes = torch.tensor([[[0.5, 0.5, 0.25, 0.5]]])
    moved = refine(torch.tensor([[[0.0, logit, 0.0, 0.0]]]), boxes)
    torch.testing.assert_close(moved, torch.tensor([[[0.5, 0.25, 0.25, 0.5]]]))
    points = torch.tensor([[[0.5, 0.25]]])  # w, h come from the deltas alone
    moved = refine(torch.tensor([[[0.0, -logit, logit, 0.0]]]), points)
    torch.testing.assert_close(moved, torch.tensor([[[0.5, 0.5, 0.25, 0.5]]]))
    assert not moved.requires_grad


def test_decoder_refines_every_layer_and_returns_each_reference():
    torch.manual_seed(0)
    attn = {"embed_dims": 8, "num_heads": 2, "dropout": 0.0}
    deform = {"embed_dims": 8, "num_heads": 2, "num_levels": 2, "num_points": 2, "dropout": 0.0}
    ffn = {"embed_dims": 8, "feedforward_channels": 16, "ffn_drop": 0.0}
    encoder = DeformableDetrTransformerEncoder(DeformableDetrTransformerEncoderConfig(
        num_layers=1, layer_cfg={"self_attn_cfg": deform, "ffn_cfg": ffn}))
    decoder = DeformableDetrTransformerDecoder(DeformableDetrTransformerDecoderConfig(
        num_layers=3, layer_cfg={"self_attn_cfg": attn, "cross_attn_cfg": deform,
                                 "ffn_cfg": ffn}))
    feats = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    pe = SinePositionalEncoding(num_feats=4, normalize=True)
    inputs = multi_level_tokens(feats, None, (16, 16), pe, torch.zeros(2, 8))
    memory = encoder(inputs)
    assert memory.shape == (1, 20, 8)
    branches = torch.nn.ModuleList(torch.nn.Linear(8, 4) for _ in range(3))
    query, pos = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    ref = torch.rand(1, 5, 2)
    states, refs = decoder(query, pos, memory, None, ref, inputs.spatial_shapes,
                           inputs.valid_ratios, reg_branches=branches)
    assert states.shape == (3, 1, 5, 8) and refs.shape == (3, 1, 5, 4)
    torch.testing.assert_close(refs[0], refine(branches[0](states[0]), ref))
    torch.testing.assert_close(refs[2], refine(branches[2](states[2]), refs[1]))
    _, plain = decoder(query, pos, memory, None, ref, inputs.spatial_shapes, inputs.valid_ratios)
    assert torch.equal(plain, ref[None].expand(3, -1, -1, -1))
