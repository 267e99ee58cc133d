"""Make tests/fixtures/mmdet/fcos_r50_dcn_shapes.json: the state-dict key shapes, in order, of
MMDetection 3.3's ``fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco``
(DCNv2 in ResNet stages c3-c5 and ``dcn_on_last_conv`` in the head, the zoo's FCOS-DCN), for
tests/models/test_fcos_head.py: a checkpoint of it loads strictly into det's model of that
config.

Run with a Python that has MMDetection 3.3 (../shared/mmdet_reference/README.md), from the
repository root::

    /work/mmref/bin/python tools/mmdet_fixtures/fcos_dcn_shapes.py
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

import dcn_kernel  # noqa: E402
import mmdet  # noqa: E402
from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402
from mmengine.config import Config  # noqa: E402

dcn_kernel.install()

NAME = "fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco"
OUT = ROOT / "tests" / "fixtures" / "mmdet" / "fcos_r50_dcn_shapes.json"


def main() -> None:
    register_all_modules()
    configs = Path(mmdet.__file__).parent / ".mim" / "configs"
    cfg = Config.fromfile(str(configs / "fcos" / f"{NAME}.py"))
    cfg.model.backbone.init_cfg = None  # no download: only names and shapes are recorded
    model = MODELS.build(cfg.model)
    shapes = {key: list(value.shape) for key, value in model.state_dict().items()}
    OUT.write_text(json.dumps({"config": NAME, "shapes": shapes}, indent=0) + "\n")
    print(f"wrote {OUT} ({len(shapes)} keys)")


if __name__ == "__main__":
    main()
