"""Make tests/fixtures/mmdet/faster_rcnn_r50_attn1111_shapes.json: the state-dict key shapes, in
order, of MMDetection 3.3's ``faster-rcnn_r50-attn1111_fpn_1x_coco`` (a GeneralizedAttention
plugin, attention_type '1111', after conv2 of every bottleneck in c4-c5), for
tests/test_attention_presets.py: the zoo's checkpoint loads strictly into det's
``faster_rcnn_r50_attn1111`` preset.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/attn1111_shapes.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

import mmdet  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402


NAME = "faster-rcnn_r50-attn1111_fpn_1x_coco"
OUT = ROOT / "tests" / "fixtures" / "mmdet" / "faster_rcnn_r50_attn1111_shapes.json"


def main() -> None:
    register_all_modules()
    configs = Path(mmdet.__file__).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(configs / "empirical_attention" / f"{NAME}.py"))
    cfg.model.backbone.init_cfg = None  # no download: only names and shapes are recorded
    model = MODELS.build(cfg.model)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    OUT.write_text(json.dumps({"config": NAME, "shapes": shapes}, indent=0) + "\n")
    print(f"wrote {OUT} ({len(shapes)} keys)")


if __name__ == "__main__":
    main()
