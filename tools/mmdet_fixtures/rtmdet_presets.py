"""Make tests/fixtures/mmdet/rtmdet_presets.json: what MMDetection 3.3's four RTMDet COCO configs
build (state-dict names and shapes, test_cfg, assigner), for tests/models/test_rtmdet_presets.py,
which checks that det's rtmdet_tiny/s/m/l presets resolve to the same models.

    /work/mmref/bin/python tools/mmdet_fixtures/rtmdet_presets.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT.parent / "shared" / "mmdet_reference"))

import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

import mmdet  # noqa: E402
from mmengine.config import Config  # noqa: E402

from mmdet.registry import MODELS  # noqa: E402
from mmdet.utils import register_all_modules  # noqa: E402

OUT = ROOT / "tests" / "fixtures" / "mmdet" / "rtmdet_presets.json"
CONFIGS = Path(mmdet.__file__).parent / ".mim" / "configs" / "rtmdet"


def main() -> None:
    register_all_modules()
    out = {"mmdet_version": mmdet.__version__, "presets": {}}
    for size in ("tiny", "s", "m", "l"):
        cfg = Config.fromfile(str(CONFIGS / f"rtmdet_{size}_8xb32-300e_coco.py"))
        cfg.model.backbone.init_cfg = None  # no download: only the layout is recorded
        model = MODELS.build(cfg.model)
        out["presets"][f"rtmdet_{size}"] = {
            "shapes": {k: list(v.shape) for k, v in model.state_dict().items()},
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "test_cfg": cfg.model.test_cfg.to_dict(),
            "assigner": cfg.model.train_cfg.assigner.to_dict(),
            "optimizer": cfg.optim_wrapper.optimizer.to_dict(),
            "max_epochs": cfg.max_epochs,
        }
        print(size, out["presets"][f"rtmdet_{size}"]["num_parameters"])
    OUT.write_text(json.dumps(out, indent=None, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
