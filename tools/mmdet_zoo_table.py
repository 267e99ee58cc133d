"""Writes detcli/zoo/mmdet_table.py: MMDetection 3.3's model-zoo entries (its configs'
metafile.yml) for the families det has, with the det preset each corresponds to.

Run with MMDetection's environment: /work/mmref/bin/python tools/mmdet_zoo_table.py
"""

from __future__ import annotations

import re
from pathlib import Path

import mmdet
import yaml

CONFIGS = Path(mmdet.__file__).parent / ".mim" / "configs"
FAMILIES = {"retinanet": "retinanet", "fcos": "fcos", "atss": "atss",
            "faster_rcnn": "faster_rcnn", "mask_rcnn": "mask_rcnn",
            "cascade_rcnn": "cascade_rcnn", "detr": "detr", "rtmdet": "rtmdet",
            "deformable_detr": "deformable_detr", "dino": "dino"}
# folders of other backbones: only their entries with a det preset (PRESETS), in that family
PRESET_ONLY = {"regnet": "retinanet", "dcnv2": "faster_rcnn", "swin": "mask_rcnn",
               "empirical_attention": "faster_rcnn"}
PRESETS = {  # MMDetection config name -> det preset that is its model
    "retinanet_r50_fpn_1x_coco": "retinanet_r50", "retinanet_r101_fpn_1x_coco": "retinanet_r101",
    "fcos_r50-caffe_fpn_gn-head_1x_coco": "fcos_r50", "atss_r50_fpn_1x_coco": "atss_r50",
    "faster-rcnn_r50_fpn_1x_coco": "faster_rcnn_r50",
    "faster-rcnn_r101_fpn_1x_coco": "faster_rcnn_r101",
    "faster-rcnn_x101-64x4d_fpn_1x_coco": "faster_rcnn_x101_64x4d",
    "mask-rcnn_r50_fpn_1x_coco": "mask_rcnn_r50", "mask-rcnn_r101_fpn_1x_coco": "mask_rcnn_r101",
    "cascade-rcnn_r50_fpn_1x_coco": "cascade_rcnn_r50", "detr_r50_8xb2-150e_coco": "detr_r50",
    "rtmdet_tiny_8xb32-300e_coco": "rtmdet_tiny", "rtmdet_s_8xb32-300e_coco": "rtmdet_s",
    "rtmdet_m_8xb32-300e_coco": "rtmdet_m", "rtmdet_l_8xb32-300e_coco": "rtmdet_l",
    "cascade-mask-rcnn_r50_fpn_1x_coco": "cascade_mask_rcnn_r50",
    "deformable-detr_r50_16xb2-50e_coco": "deformable_detr_r50",
    "deformable-detr-refine_r50_16xb2-50e_coco": "deformable_detr_refine_r50",
    "deformable-detr-refine-twostage_r50_16xb2-50e_coco": "deformable_detr_refine_twostage_r50",
    "dino-4scale_r50_8xb2-12e_coco": "dino_4scale_r50",
    "retinanet_regnetx-3.2GF_fpn_1x_coco": "retinanet_regnetx_3_2gf",
    "faster-rcnn_r50_fpn_mdconv_c3-c5_1x_coco": "faster_rcnn_r50_dcnv2",
    "mask-rcnn_swin-t-p4-w7_fpn_1x_coco": "mask_rcnn_swin_t",
    "faster-rcnn_r50_fpn_attention_1111_1x_coco": "faster_rcnn_r50_attn1111",
    "fcos_r50-dcn-caffe_fpn_gn-head-center-normbbox-centeronreg-giou_1x_coco": "fcos_r50_dcn",
}
HASH = re.compile(r"-([a-f0-9]{8,})\.pth$")


def entries() -> list[tuple]:
    rows = []
    for folder, family in {**FAMILIES, **PRESET_ONLY}.items():
        meta = yaml.safe_load((CONFIGS / folder / "metafile.yml").read_text())
        for model in meta.get("Models", []):
            url = model.get("Weights") or ""
            found = HASH.search(url)
            if not found or (folder in PRESET_ONLY and model["Name"] not in PRESETS):
                continue
            metrics: dict[str, float] = {}
            for result in model.get("Results") or []:
                metrics.update({k: v for k, v in (result.get("Metrics") or {}).items()
                                if k in ("box AP", "mask AP")})
            if metrics.get("box AP") is not None:
                rows.append((model["Name"], family, PRESETS.get(model["Name"]), url,
                             found.group(1), metrics.get("box AP"), metrics.get("mask AP")))
    return sorted(rows)


def main() -> None:
    lines = ['"""MMDetection 3.3\'s model zoo for the families det has: written by',
             'tools/mmdet_zoo_table.py from MMDetection\'s configs/*/metafile.yml (do not edit).',
             '', 'Each row: (name, family, det preset or None, URL, sha256 prefix, box AP, mask AP).',
             '"""', '', 'from __future__ import annotations', '',
             'ROWS: tuple[tuple[str, str, str | None, str, str, float | None, float | None], ...] = (']
    for row in entries():
        lines.append(f"    {row!r},")
    lines.append(")")
    target = Path(__file__).resolve().parents[1] / "detcli" / "zoo" / "mmdet_table.py"
    target.parent.mkdir(exist_ok=True)
    target.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
