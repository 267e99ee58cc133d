"""Writes tests/fixtures/mmdet_configs/expected.json: MMEngine's own reading (Config.fromfile,
which executes the files) of the MMDetection 3.3 configs kept under tests/fixtures/mmdet_configs,
so det's reader (detcli/config/mmdet_reader.py, which never executes them) is checked against it.

Run with MMDetection's environment: /work/mmref/bin/python tools/mmdet_config_fixture.py
"""

from __future__ import annotations

import json
from pathlib import Path

from mmengine.config import Config

ROOT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mmdet_configs"
CONFIGS = ["retinanet/retinanet_r18_fpn_1x_coco.py", "fcos/fcos_r50-caffe_fpn_gn-head_1x_coco.py",
           "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", "detr/detr_r50_8xb2-150e_coco.py",
           "rtmdet/rtmdet_tiny_8xb32-300e_coco.py", "faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py",
           "empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py",
           "fcos/fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco.py",
           "rtmdet/rtmdet_tta.py", "retinanet/retinanet_tta.py"]
KEYS = ["model", "train_cfg", "optim_wrapper", "train_pipeline", "param_scheduler",
        "custom_hooks", "tta_model", "tta_pipeline"]


def main() -> None:
    expected = {}
    for name in CONFIGS:
        cfg = Config.fromfile(ROOT / name).to_dict()
        expected[name] = {key: cfg[key] for key in KEYS if key in cfg}
    (ROOT / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
