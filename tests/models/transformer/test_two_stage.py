"""Two-stage Deformable DETR's proposal generation by hand: centres, sizes per level, the
valid-mask and padding semantics, logit space; the proposals' sine embedding."""

from __future__ import annotations

import math

import torch

from detcli.models.transformer.two_stage import encoder_proposals, proposal_pos_embed


def logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_proposals_are_pixel_centres_with_level_sizes_in_logit_space():
    """Level 0: 2 x 4 tokens, level 1: 1 x 2; no padding."""
    memory = torch.ones(1, 10, 3)
    kept, proposals = encoder_proposals(memory, None, [(2, 4), (1, 2)])
    assert proposals.shape == (1, 10, 4)
    # token (row 1, col 2) of level 0: centre ((2 + 0.5) / 4, (1 + 0.5) / 2), size 0.05
    torch.testing.assert_close(proposals[0, 6], torch.tensor(
        [logit(0.625), logit(0.75), logit(0.05), logit(0.05)]))
    # token (row 0, col 1) of level 1: centre (0.75, 0.5), size 0.05 * 2 = 0.1
    torch.testing.assert_close(proposals[0, 9], torch.tensor(
        [logit(0.75), logit(0.5), logit(0.1), logit(0.1)]))
    assert torch.equal(kept, memory)


def test_padding_and_out_of_range_proposals_are_inf_and_their_memory_zero():
    """One level of 2 x 3 tokens; the image covers 2 x 2 of it (the third column is padding).
    The valid extent is 2 columns, so column 1's centre is (1 + 0.5) / 2 = 0.75 and the
    padded column's 1.25: out of (0.01, 0.99) even without its mask. A level-5 size of
    0.05 * 32 = 1.6 makes every proposal of that level invalid."""
    memory = torch.randn(1, 6, 3)
    mask = torch.tensor([[False, False, True, False, False, True]])
    kept, proposals = encoder_proposals(memory, mask, [(2, 3)])
    torch.testing.assert_close(proposals[0, 1, :2], torch.tensor([logit(0.75), logit(0.25)]))
    assert torch.isinf(proposals[0, [2, 5]]).all() and torch.isfinite(proposals[0, [0, 1, 3, 4]]).all()
    assert kept[0, [2, 5]].abs().sum() == 0
    assert torch.equal(kept[0, [0, 1, 3, 4]], memory[0, [0, 1, 3, 4]])
    small = [(1, 1)] * 5 + [(1, 2)]  # level 5: size 1.6
    memory = torch.ones(1, 7, 3)
    kept, proposals = encoder_proposals(memory, None, small)
    assert torch.isinf(proposals[0, 5:]).all() and kept[0, 5:].abs().sum() == 0
    assert torch.isfinite(proposals[0, :5]).all()  # sizes 0.05 .. 0.8, centre 0.5


def test_proposal_pos_embed_interleaves_sine_and_cosine_per_coordinate():
    box = torch.tensor([[[0.0, logit(0.25), 0.0, 0.0]]])  # sigmoid: (0.5, 0.25, 0.5, 0.5)
    embed = proposal_pos_embed(box, num_pos_feats=4, temperature=100)
    assert embed.shape == (1, 1, 16)
    y = 0.25 * 2 * math.pi
    dims = [1, 1, 100 ** 0.5, 100 ** 0.5]  # temperature ** (2 * (i // 2) / 4)
    expected = [math.sin(y / dims[0]), math.cos(y / dims[1]), math.sin(y / dims[2]),
                math.cos(y / dims[3])]
    torch.testing.assert_close(embed[0, 0, 4:8], torch.tensor(expected))
