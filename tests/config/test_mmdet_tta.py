"""``det config import`` of MMDetection 3.3's ``tta_model`` / ``tta_pipeline``
(detcli/config/mmdet_tta.py): retinanet_tta.py and rtmdet_tta.py, copied from MMDetection 3.3
under tests/fixtures/mmdet_configs (MMEngine's reading of them in expected.json)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detcli.config.loader import load_config
from detcli.config.mmdet_import import import_mmdet_config
from detcli.config.mmdet_reader import Unread, read_mmdet_config
from detcli.data.transforms.test_time import MultiScaleFlipAugConfig
from detcli.engine.tta import num_views

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "mmdet_configs"
R18 = ROOT / "retinanet/retinanet_r18_fpn_1x_coco.py"


def imported(tmp_path: Path, source: Path):
    result = import_mmdet_config(source, out_folder=tmp_path)
    (tmp_path / "out.toml").write_text(result.text)
    return result, load_config(tmp_path / "out.toml")


def with_tta(tmp_path: Path, tta: str | Path, body: str = "") -> Path:
    (tmp_path / "cfg.py").write_text(f"_base_ = ['{R18}', '{tta}']\n{body}")
    return tmp_path / "cfg.py"


def keys(result) -> dict[str, str]:
    return {u.key: u.reason for u in result.untranslated}


def test_retinanet_tta_becomes_tta_and_the_test_pipelines_views(tmp_path):
    result, loaded = imported(tmp_path, with_tta(tmp_path, ROOT / "retinanet/retinanet_tta.py"))
    assert result.preset == "retinanet_r50"
    assert not {"tta_model", "tta_pipeline"} & set(keys(result))
    cfg = loaded.cfg
    # DetTTAModel's tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    assert cfg.tta.nms.type == "nms" and cfg.tta.nms.iou_threshold == 0.5
    assert cfg.tta.max_per_img == 100
    aug = cfg.data.test.pipeline[-1]
    assert isinstance(aug, MultiScaleFlipAugConfig)
    # img_scales = [(1333, 800), (666, 400), (2000, 1200)] x RandomFlip prob 1 / 0
    assert [tuple(s) for s in aug.img_scale] == [(1333, 800), (666, 400), (2000, 1200)]
    assert aug.flip and aug.flip_direction == "horizontal"
    assert num_views(cfg.data.test) == 6
    # its first view is the plain test pipeline (what det test runs without --tta)
    plain = imported(tmp_path, R18)[1].resolved()["data"]["test"]["pipeline"]
    ours = loaded.resolved()["data"]["test"]["pipeline"]
    assert ours[:-1] == plain[:-1] and ours[-1]["transforms"] == plain[-1]["transforms"]
    assert plain[-1]["img_scale"] == [1333, 800] and not plain[-1]["flip"]


def test_the_test_pipelines_scale_is_put_first(tmp_path):
    (tmp_path / "tta.py").write_text(
        (ROOT / "retinanet/retinanet_tta.py").read_text().replace(
            "img_scales = [(1333, 800), (666, 400), (2000, 1200)]",
            "img_scales = [(666, 400), (1333, 800)]"))
    _, loaded = imported(tmp_path, with_tta(tmp_path, tmp_path / "tta.py"))
    assert [tuple(s) for s in loaded.cfg.data.test.pipeline[-1].img_scale] == [
        (1333, 800), (666, 400)]


def test_rtmdet_tta_keeps_the_test_pipeline_and_says_why(tmp_path):
    result, loaded = imported(tmp_path, ROOT / "rtmdet/rtmdet_tiny_8xb32-300e_coco.py")
    assert result.preset == "rtmdet_tiny"
    assert loaded.cfg.tta.nms.iou_threshold == 0.6 and loaded.cfg.tta.max_per_img == 100
    reason = keys(result)["tta_pipeline"]
    # rtmdet_tta.py pads every view to 960 x 960; RTMDet's test pipeline pads to 640 x 640
    assert "'size': [960, 960]" in reason and "'size': [640, 640]" in reason
    assert "tta_model" not in keys(result)
    assert loaded.resolved()["data"]["test"]["pipeline"] == \
        load_config("rtmdet_tiny").resolved()["data"]["test"]["pipeline"]


@pytest.mark.parametrize("options, words", [
    ("[[dict(type='Resize', scale=(1333, 800), keep_ratio=True)], "
     "[dict(type='PhotoMetricDistortion'), dict(type='RandomFlip', prob=0.)]]",
     "a choice of 2 transforms (PhotoMetricDistortion, RandomFlip)"),
    ("[[dict(type='Resize', scale=(1333, 800), keep_ratio=True)], "
     "[dict(type='RandomFlip', prob=0.5), dict(type='RandomFlip', prob=0.)]]",
     "RandomFlip probs [0.5, 0.0]"),
    ("[[dict(type='Resize', scale=(1333, 800), keep_ratio=True), "
     "dict(type='Resize', scale=(666, 400), keep_ratio=False)]]",
     "Resize steps that differ in more than scale"),
    ("[[dict(type='Pad', size_divisor=32)]]", "no list of Resize steps"),
    ("[[dict(type='RandomFlip', prob=0.)], [dict(type='Resize', scale=(1333, 800))]]",
     "RandomFlip not right after the Resize steps"),
])
def test_views_det_cannot_make_are_listed(tmp_path, options, words):
    body = ("tta_pipeline = [dict(type='LoadImageFromFile'), "
            f"dict(type='TestTimeAug', transforms={options})]\n")
    (tmp_path / "tta.py").write_text("")
    result, loaded = imported(tmp_path, with_tta(tmp_path, tmp_path / "tta.py", body))
    assert any(words in reason for key, reason in keys(result).items()
               if key.startswith("tta_pipeline")), keys(result)
    assert num_views(loaded.cfg.data.test) == 1  # the plain test pipeline stays


def test_another_tta_model_is_listed(tmp_path):
    (tmp_path / "tta.py").write_text("tta_model = dict(type='MyTTA', tta_cfg=dict(max_per_img=5))"
                                     "\n")
    result, loaded = imported(tmp_path, with_tta(tmp_path, tmp_path / "tta.py"))
    assert "'MyTTA'" in keys(result)["tta_model"]
    assert loaded.cfg.tta.max_per_img == "model"  # [tta]'s default


def test_a_comprehension_over_a_read_list_is_read(tmp_path):
    (tmp_path / "c.py").write_text(
        "s = 'kept'\nscales = [(1, 2), (3, 4)]\n"
        "steps = [dict(type='Resize', scale=s) for s in scales]\n"
        "after = s\n"
        "filtered = [s for s in scales if s]\n"
        "unknown = [s for s in other]\n")
    values = read_mmdet_config(tmp_path / "c.py").values
    assert values["steps"] == [{"type": "Resize", "scale": (1, 2)},
                               {"type": "Resize", "scale": (3, 4)}]
    assert values["after"] == "kept"  # the loop name does not leak out
    assert isinstance(values["filtered"], Unread) and isinstance(values["unknown"], Unread)
