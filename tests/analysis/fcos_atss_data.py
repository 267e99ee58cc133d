"""Configs for the FCOS and ATSS tool tests: the tiny presets on the viz tests' two images
(tests/analysis/tiny_data.py) and on the anchor tests' hand-made set (tests/analysis/anchor_data.py).

Hand-made set under FCOS with one level, stride 16 (points at 8, 24, ... on the 96 x 64
network input) and one regress range [-1, 1e8]. GT boxes are the anchor tests' scaled by 2:

    a.jpg  GT0 [16, 16, 48, 48]  points x 24, 40; y 24, 40      4 positives
           GT1 [52, 0, 80, 24]   x 56, 72; y 8 (24 is its side)  2
           GT2 [0, 20, 16, 44]   x 8; y 24, 40                   2
    b.jpg  GT1 [52, 0, 80, 24]   (56, 8), (72, 8), but GT3 is smaller (384 < 672): 0
           GT3 [52, 4, 76, 20]   (56, 8), (72, 8)                2
    c.jpg  GT4 [48, 16, 80, 48]  x 56, 72; y 24, 40              4

so 1 of 6 GT boxes has no positive point, and a GT gets 14 / 6 positives on average.
"""

from __future__ import annotations

from pathlib import Path

from tests.analysis.anchor_data import hand_config
from tests.analysis.tiny_data import TINY, TinyData

ROOT = Path(__file__).resolve().parents[2]
FCOS = ROOT / "presets" / "fcos_tiny_synth.toml"
ATSS = ROOT / "presets" / "atss_tiny_synth.toml"


def on_tiny(tiny: TinyData, preset: Path) -> Path:
    """The viz tests' config (two images) with ``preset``'s model instead of RetinaNet's."""
    path = tiny.config.parent / f"{preset.stem}_viz.toml"
    path.write_text(tiny.config.read_text().replace(str(TINY), str(preset)))
    return path


def fcos_hand_config(folder: Path) -> Path:
    """FCOS (stride 16, one range) on the hand-made set; answers in the module docstring."""
    text = hand_config(folder).read_text()
    path = folder / "fcos_hand.toml"
    path.write_text(f'extends = ["{FCOS}"]\n'
                    "[model.bbox_head]\nstrides = [16]\nregress_ranges = [[-1, 1e8]]\n"
                    + text[text.index("[data.val]"):])
    return path
