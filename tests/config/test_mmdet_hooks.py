"""``det config import``'s ``custom_hooks``: MMDetection 3.3's RTMDet config (kept under
tests/fixtures/mmdet_configs/rtmdet with its _base_ files) gives the RTMDet preset's EMAHook and
PipelineSwitchHook; other hooks and arguments are listed with the reason and left out."""

from __future__ import annotations

from pathlib import Path

from detcli.config.loader import load_config
from detcli.config.mmdet_hooks import translate_custom_hooks
from detcli.config.mmdet_import import import_mmdet_config
from detcli.config.mmdet_reader import read_mmdet_config

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "mmdet_configs"
RTMDET_TINY = ROOT / "rtmdet" / "rtmdet_tiny_8xb32-300e_coco.py"
R18 = ROOT / "retinanet" / "retinanet_r18_fpn_1x_coco.py"
# train_pipeline_stage2 of rtmdet_tiny_8xb32-300e_coco.py, PackDetInputs as det's four steps
STAGE2 = ["LoadImageFromFile", "LoadAnnotations", "RandomResize", "RandomCrop",
          "YOLOXHSVRandomAug", "RandomFlip", "Pad", "Normalize", "DefaultFormatBundle", "Collect"]


def test_rtmdets_hooks_become_the_rtmdet_presets(tmp_path):
    values = read_mmdet_config(RTMDET_TINY).values
    out = []
    hooks = translate_custom_hooks(values, values["model"]["data_preprocessor"], out)
    assert [h["type"] for h in hooks] == ["NumClassCheckHook", "EMAHook", "PipelineSwitchHook"]
    assert hooks[1] == {"type": "EMAHook", "ema_type": "ExpMomentumEMA", "momentum": 0.0002,
                        "update_buffers": True}
    switch = hooks[2]
    assert switch["switch_epoch"] == 280  # max_epochs - stage2_num_epochs = 300 - 20
    assert [s["type"] for s in switch["switch_pipeline"]] == STAGE2
    resize = switch["switch_pipeline"][2]
    assert (resize["scale"], resize["ratio_range"]) == ((640, 640), (0.5, 2.0))
    assert switch["switch_pipeline"][7] == {  # the data_preprocessor's mean and std, BGR kept
        "type": "Normalize", "mean": [103.53, 116.28, 123.675], "std": [57.375, 57.12, 58.395],
        "to_rgb": False}
    assert [(u.key, u.reason.split(" (")[0]) for u in out] == [
        ("custom_hooks[0].priority", "det orders its hooks itself")]

    result = import_mmdet_config(RTMDET_TINY, out_folder=tmp_path)
    assert result.preset == "rtmdet_tiny"
    written = result.text.split("\nextends = ", 1)[1]
    assert "custom_hooks" not in written  # equal to the preset's once defaults are filled in
    (tmp_path / "tiny.toml").write_text(result.text)
    ours = load_config(tmp_path / "tiny.toml").resolved()["custom_hooks"]
    assert ours == load_config("rtmdet_tiny").resolved()["custom_hooks"]
    keys = {u.key for u in result.untranslated}
    assert "custom_hooks" not in keys and "train_cfg.dynamic_intervals" in keys


def test_other_hooks_and_arguments_are_listed_and_left_out(tmp_path):
    (tmp_path / "hooks.py").write_text(
        f"_base_ = '{R18}'\n"
        "custom_hooks = [\n"
        "    dict(type='EMAHook', momentum=0.001),\n"  # MMEngine's default ema_type
        "    dict(type='EMAHook', ema_type='StochasticWeightAverage'),\n"
        "    dict(type='EMAHook', ema_type='ExpMomentumEMA', begin_epoch=5),\n"
        "    dict(type='SyncNormHook'),\n"
        "    dict(type='FancyHook', x=1),\n"
        "    dict(type='EarlyStoppingHook', monitor='coco/bbox_mAP', patience=3),\n"
        "    dict(type='PipelineSwitchHook', switch_epoch=5,\n"
        "         switch_pipeline=[dict(type='LoadImageFromFile'), dict(type='Albu')]),\n"
        "]\n")
    result = import_mmdet_config(tmp_path / "hooks.py", out_folder=tmp_path)
    reasons = {u.key: u.reason for u in result.untranslated if u.key.startswith("custom_hooks")}
    assert reasons["custom_hooks[1]"].startswith("EMAHook(ema_type='StochasticWeightAverage'): "
                                                 "det averages with ExpMomentumEMA or "
                                                 "ExponentialMovingAverage")
    assert reasons["custom_hooks[2].begin_epoch"] == \
        "det's EMAHook averages from the first iteration"
    assert reasons["custom_hooks[2]"].endswith("left out")
    assert reasons["custom_hooks[3]"].startswith("SyncNormHook: det has no hook that syncs")
    assert reasons["custom_hooks[4]"].startswith("FancyHook: det has no hook of that name")
    assert "transform 1 (Albu) has no det counterpart" in \
        reasons["custom_hooks[6].switch_pipeline"]
    assert reasons["custom_hooks[6]"] == \
        "PipelineSwitchHook: its switch_pipeline does not translate; left out"
    assert len(reasons) == 7

    (tmp_path / "hooks.toml").write_text(result.text)
    cfg = load_config(tmp_path / "hooks.toml").cfg
    check, ema, stopping = cfg.custom_hooks
    assert check.type == "NumClassCheckHook"
    assert (ema.type, ema.ema_type, ema.momentum) == ("EMAHook", "ExponentialMovingAverage", 0.001)
    assert (stopping.monitor, stopping.patience, stopping.min_delta) == ("bbox_mAP", 3, 0.1)


def test_a_config_without_custom_hooks_keeps_the_presets():
    out = []
    assert translate_custom_hooks(read_mmdet_config(R18).values, {}, out) is None and out == []
