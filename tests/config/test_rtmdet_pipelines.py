"""The RTMDet presets train with MMDetection 3.3's pipelines (rtmdet_*_8xb32-300e_coco.py).

Expected values are read off MMDetection's config files: the steps in order, RandomResize's
ratio range (l and m: 0.1-2.0 of 1280; s and tiny: 0.5-2.0), the cache sizes and MixUp's
probability, and the PipelineSwitchHook at epoch 280 whose stage-2 pipeline drops the
mixed-image steps and resizes around 640.
"""

from __future__ import annotations

import pytest

from detcli.config.loader import load_config

STAGE1 = ["LoadImageFromFile", "LoadAnnotations", "CachedMosaic", "RandomResize", "RandomCrop",
          "YOLOXHSVRandomAug", "RandomFlip", "Pad", "CachedMixUp", "Normalize",
          "DefaultFormatBundle", "Collect"]
STAGE2 = [t for t in STAGE1 if t not in ("CachedMosaic", "CachedMixUp")]
# name -> (ratio_range, mosaic cache, mosaic random_pop, mixup cache, mixup random_pop, mixup p)
MMDET = {
    "rtmdet_l": ((0.1, 2.0), 40, True, 20, True, 1.0),
    "rtmdet_m": ((0.1, 2.0), 40, True, 20, True, 1.0),
    "rtmdet_s": ((0.5, 2.0), 40, True, 20, True, 1.0),
    "rtmdet_tiny": ((0.5, 2.0), 20, False, 10, False, 0.5),
}


@pytest.mark.parametrize("name", sorted(MMDET))
def test_rtmdet_presets_train_with_mmdetections_two_pipelines(name):
    cfg = load_config(name).cfg
    ratio, mosaic_cache, mosaic_pop, mixup_cache, mixup_pop, mixup_p = MMDET[name]
    steps = {t.type: t for t in cfg.data.train.pipeline}
    assert [t.type for t in cfg.data.train.pipeline] == STAGE1
    assert tuple(steps["RandomResize"].ratio_range) == ratio
    assert tuple(steps["RandomResize"].scale) == (1280, 1280)
    assert (steps["CachedMosaic"].max_cached_images, steps["CachedMosaic"].random_pop) == \
        (mosaic_cache, mosaic_pop)
    mixup = steps["CachedMixUp"]
    assert (mixup.max_cached_images, mixup.random_pop, mixup.prob) == \
        (mixup_cache, mixup_pop, mixup_p)
    (switch,) = [h for h in cfg.custom_hooks if h.type == "PipelineSwitchHook"]
    assert switch.switch_epoch == cfg.runner.max_epochs - 20 == 280
    assert [t.type for t in switch.switch_pipeline] == STAGE2
    (resize,) = [t for t in switch.switch_pipeline if t.type == "RandomResize"]
    assert (tuple(resize.scale), tuple(resize.ratio_range)) == ((640, 640), ratio)
    assert [h.type for h in cfg.custom_hooks] == ["NumClassCheckHook", "EMAHook",
                                                  "PipelineSwitchHook"]
    assert cfg.lr_config.warmup_iters == 999
