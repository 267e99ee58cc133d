"""Make tests/models/backbones/mmdet_swin.pt: MMDetection 3.3's SwinTransformer state-dict names
and outputs, for tests/models/backbones/test_swin.py.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/swin.py

Recorded: ``names``, the key shapes of the Swin-T backbone of
swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py; ``index``, one WindowMSA's
``relative_position_index`` (window 7); per entry of ``OUTPUTS`` (narrow Swins, so the file
stays small) the key shapes and the eval-mode outputs on ``seeded_input(size, SEED)`` with the
weights ``seeded_state(shapes, SEED)`` of tests/models/backbones/seeded.py, every key but the
integer ``relative_position_index`` buffers (each model's own). One input is 224 x 224 (whole
windows: 56, 28, 14, 7 tokens a side), one is odd (61 x 75: the patch embedding, the windows and
the merging all pad, and the last two stages are one window that MMDetection still shifts).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from tests.models.backbones.seeded import seeded_input, seeded_state  # noqa: E402

OUT = ROOT / "tests" / "models" / "backbones" / "mmdet_swin.pt"
SEED = 24
SWIN_T = dict(type="SwinTransformer", embed_dims=96, depths=[2, 2, 6, 2],
              num_heads=[3, 6, 12, 24], window_size=7, mlp_ratio=4, qkv_bias=True,
              qk_scale=None, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.2,
              patch_norm=True, out_indices=(0, 1, 2, 3), with_cp=False, convert_weights=True)
TINY = dict(type="SwinTransformer", embed_dims=24, depths=[2, 2, 2, 2], num_heads=[1, 2, 3, 4],
            window_size=7)
# name: (MMDetection's config, input size)
OUTPUTS = {
    "tiny_224": (dict(TINY, out_indices=(1, 2, 3)), (1, 3, 224, 224)),
    "tiny_odd": (dict(TINY), (1, 3, 61, 75)),
    "w5_no_qkv_bias_scale_no_patch_norm": (
        dict(TINY, window_size=5, qkv_bias=False, qk_scale=0.25, patch_norm=False,
             depths=[1, 2, 3, 2], out_indices=(0, 2, 3)), (2, 3, 45, 37)),
}


def shapes_of(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def float_keys(shapes: dict[str, list[int]]) -> dict[str, list[int]]:
    """The entries seeded_state fills (not the integer index buffers)."""
    return {k: s for k, s in shapes.items() if not k.endswith("relative_position_index")}


def main() -> None:
    register_all_modules()
    swin_t = MODELS.build(dict(SWIN_T))
    fixture: dict[str, object] = {
        "seed": SEED, "names": {"cfg": SWIN_T, "shapes": shapes_of(swin_t)},
        "index": swin_t.stages[0].blocks[0].attn.w_msa.relative_position_index.clone(),
        "outputs": {}}
    for name, (cfg, size) in OUTPUTS.items():
        model = MODELS.build(dict(cfg))
        model.eval()  # MMDetection's SwinTransformer.train returns None
        shapes = shapes_of(model)
        missing = model.load_state_dict(seeded_state(float_keys(shapes), SEED), strict=False)
        assert all(k.endswith("relative_position_index") for k in missing.missing_keys)
        assert not missing.unexpected_keys
        with torch.no_grad():
            outs = [o.clone() for o in model(seeded_input(size, SEED))]
        fixture["outputs"][name] = {"cfg": cfg, "input": size, "shapes": shapes, "outs": outs}
        print(name, [tuple(o.shape) for o in outs])
    torch.save(fixture, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
