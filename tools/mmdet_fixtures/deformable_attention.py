"""Make tests/fixtures/mmdet/ms_deform_attn.pt: MMCV 2.1's ``MultiScaleDeformableAttention``
(its pure-PyTorch path, ``multi_scale_deformable_attn_pytorch``, the one it takes on the CPU)
on a tiny seeded input, for tests/models/transformer/test_deformable_attention.py.

Run with a Python that has MMCV (../shared/mmdet_reference/README.md), from the repository
root::

    /work/mmref/bin/python tools/mmdet_fixtures/deformable_attention.py

Recorded: the module's state dict right after MMCV's ``init_weights`` (the sampling offsets'
direction pattern), then with seeded random weights (offset weights scaled so the points land
inside and outside the maps) the outputs for reference points (x, y) and reference boxes
(cx, cy, w, h), with a key padding mask and an identity, batch first; and the bare function's
output on random locations and weights.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

from mmcv.ops.multi_scale_deform_attn import (  # noqa: E402
    MultiScaleDeformableAttention,
    multi_scale_deformable_attn_pytorch,
)

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "ms_deform_attn.pt"
SEED = 23
EMBED, HEADS, LEVELS, POINTS = 16, 2, 2, 3
SHAPES = [(5, 7), (3, 4)]  # (h, w) per level
NUM, QUERIES = 2, 6


def main() -> None:
    torch.manual_seed(SEED)
    attn = MultiScaleDeformableAttention(embed_dims=EMBED, num_heads=HEADS, num_levels=LEVELS,
                                         num_points=POINTS, dropout=0.0, batch_first=True)
    attn.init_weights()
    init_state = {k: v.clone() for k, v in attn.state_dict().items()}
    with torch.no_grad():
        for name, param in attn.named_parameters():
            param.copy_(torch.randn_like(param) * (0.3 if param.dim() > 1 else 0.2))
        attn.sampling_offsets.weight.mul_(3.0)
    state = {k: v.clone() for k, v in attn.state_dict().items()}
    num_values = sum(h * w for h, w in SHAPES)
    query = torch.randn(NUM, QUERIES, EMBED)
    query_pos = torch.randn(NUM, QUERIES, EMBED)
    value = torch.randn(NUM, num_values, EMBED)
    identity = torch.randn(NUM, QUERIES, EMBED)
    mask = torch.zeros(NUM, num_values, dtype=torch.bool)
    mask[1, 30:35] = True  # the last row of image 1's first level
    mask[1, -4:] = True  # the last row of its second level
    ref_points = torch.rand(NUM, QUERIES, LEVELS, 2)
    ref_boxes = torch.cat([torch.rand(NUM, QUERIES, LEVELS, 2),
                           torch.rand(NUM, QUERIES, LEVELS, 2) * 0.5 + 0.05], -1)
    spatial = torch.tensor(SHAPES)
    start = torch.cat([spatial.new_zeros(1), spatial.prod(1).cumsum(0)[:-1]])
    outputs = {}
    with torch.no_grad():
        for name, ref in (("points", ref_points), ("boxes", ref_boxes)):
            outputs[name] = attn(query, value=value, identity=identity, query_pos=query_pos,
                                 key_padding_mask=mask, reference_points=ref,
                                 spatial_shapes=spatial, level_start_index=start)
    torch.manual_seed(SEED + 1)
    self_ref = torch.rand(NUM, num_values, LEVELS, 2)
    with torch.no_grad():
        outputs["self"] = attn(query=value, key_padding_mask=mask, reference_points=self_ref,
                               spatial_shapes=spatial, level_start_index=start)
    fn_value = torch.randn(NUM, num_values, HEADS, EMBED // HEADS)
    fn_locations = torch.rand(NUM, QUERIES, HEADS, LEVELS, POINTS, 2) * 1.4 - 0.2
    fn_weights = torch.rand(NUM, QUERIES, HEADS, LEVELS, POINTS)
    fn_out = multi_scale_deformable_attn_pytorch(fn_value, spatial, fn_locations, fn_weights)
    fixture = dict(
        config=dict(embed_dims=EMBED, num_heads=HEADS, num_levels=LEVELS, num_points=POINTS),
        spatial_shapes=SHAPES, init_state=init_state, state=state, query=query,
        query_pos=query_pos, value=value, identity=identity, key_padding_mask=mask,
        ref_points=ref_points, ref_boxes=ref_boxes, self_ref=self_ref, outputs=outputs,
        fn=dict(value=fn_value, locations=fn_locations, weights=fn_weights, out=fn_out),
        mmcv_version=__import__("mmcv").__version__)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
