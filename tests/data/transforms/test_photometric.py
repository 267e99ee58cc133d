"""Normalize numbers and PhotoMetricDistortion's behaviour."""

from __future__ import annotations

import numpy as np
import pytest

from detcli.data.transforms.photometric import (
    Normalize,
    PhotoMetricDistortion,
    PhotoMetricDistortionConfig,
)


def pixel_image(bgr=(10, 20, 30)):
    return np.array([[bgr, bgr]], dtype=np.uint8)  # (1, 2, 3)


def test_normalize_to_rgb():
    out = Normalize(mean=(1, 2, 3), std=(2, 4, 5), to_rgb=True)({"img": pixel_image()})
    # BGR (10, 20, 30) -> RGB (30, 20, 10) -> ((30-1)/2, (20-2)/4, (10-3)/5)
    np.testing.assert_allclose(out["img"][0, 0], [14.5, 4.5, 1.4], rtol=1e-6)
    assert out["img"].dtype == np.float32
    cfg = out["img_norm_cfg"]
    np.testing.assert_array_equal(cfg["mean"], [1, 2, 3])
    np.testing.assert_array_equal(cfg["std"], [2, 4, 5])
    assert cfg["to_rgb"] is True


def test_normalize_keep_bgr_and_input_untouched():
    img = pixel_image()
    out = Normalize(mean=(1, 2, 3), std=(2, 4, 5), to_rgb=False)({"img": img})
    np.testing.assert_allclose(out["img"][0, 1], [4.5, 4.5, 5.4], rtol=1e-6)  # (10-1)/2, ...
    assert img[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(ValueError, match="positive"):
        Normalize(mean=(0, 0, 0), std=(1, 0, 1))


def test_photometric_identity_settings_only_permute_channels():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    still = PhotoMetricDistortion(brightness_delta=0, contrast_range=(1, 1),
                                  saturation_range=(1, 1), hue_delta=0)
    for seed in range(6):
        np.random.seed(seed)
        out = still({"img": img})["img"]
        assert out.dtype == np.float32 and out.shape == img.shape
        # Up to a channel permutation, the HSV round trip gives the input back.
        np.testing.assert_allclose(np.sort(out, axis=-1), np.sort(img.astype(np.float32), axis=-1),
                                   atol=1e-2)


def test_photometric_changes_colours_within_range():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    jitter = PhotoMetricDistortion()
    changed = 0
    for seed in range(8):
        np.random.seed(seed)
        out = jitter({"img": img})["img"]
        assert out.min() >= 0 and out.max() <= 255
        changed += not np.allclose(np.sort(out, -1), np.sort(img.astype(np.float32), -1), atol=0.5)
    assert changed >= 6  # each of 4 steps fires with p = 0.5: all skipped has p = 1/16
    assert img.dtype == np.uint8  # the input array is left alone


@pytest.mark.parametrize("pick, expected_bgr", [(max, (0, 76.5, 255)), (min, (76.5, 0, 255))])
def test_photometric_hue_shift_wraps_around(monkeypatch, pick, expected_bgr):
    # Every step fires, contrast first, no channel swap; the hue delta is +18 or -18 degrees.
    monkeypatch.setattr(np.random, "randint", lambda n: 1)
    monkeypatch.setattr(np.random, "uniform", lambda lo, hi: pick(lo, hi))
    monkeypatch.setattr(np.random, "permutation", lambda n: np.arange(n))
    red = np.full((1, 1, 3), (0, 0, 255), np.uint8)  # hue 0
    jitter = PhotoMetricDistortion(brightness_delta=0, contrast_range=(1, 1),
                                   saturation_range=(1, 1), hue_delta=18)
    out = jitter({"img": red})["img"]
    # Hue 18: G = 255 * 18/60; hue -18 wraps to 342: B = 255 * 18/60.
    np.testing.assert_allclose(out[0, 0], expected_bgr, atol=0.05)


def test_photometric_defaults_are_mmdetection_s():
    cfg = PhotoMetricDistortionConfig()
    assert (cfg.brightness_delta, cfg.contrast_range, cfg.saturation_range, cfg.hue_delta) == (
        32, (0.5, 1.5), (0.5, 1.5), 18)
    with pytest.raises(ValueError, match="low <= high"):
        PhotoMetricDistortionConfig(contrast_range=(1.5, 0.5))
