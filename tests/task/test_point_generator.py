"""MlvlPointGenerator: hand-computed points (x, y) and strides, layout, valid flags, config."""

from __future__ import annotations

import pytest
import torch

from detcli.config.loader import validate_tree
from detcli.errors import ConfigError
from detcli.registry import PRIOR_GENERATORS
from detcli.task.prior_generators import (
    AnchorGenerator,
    MlvlPointGenerator,
    MlvlPointGeneratorConfig,
)


def test_points_sit_at_cell_centres_row_major():
    generator = MlvlPointGenerator(strides=[8, 16])
    level0, level1 = generator.grid_priors([(2, 3), (1, 2)])
    # (x + 0.5) * 8 for x in 0..2, (y + 0.5) * 8 for y in 0..1; x inner
    assert level0.tolist() == [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]]
    assert level1.tolist() == [[8, 8], [24, 8]]
    assert level0.dtype == torch.float32


def test_with_stride_appends_the_strides_and_pairs_are_width_then_height():
    generator = MlvlPointGenerator(strides=[(8, 4)], offset=0.0)
    (points,) = generator.grid_priors([(2, 2)], with_stride=True)
    assert points.tolist() == [[0, 0, 8, 4], [8, 0, 8, 4], [0, 4, 8, 4], [8, 4, 8, 4]]


def test_offset_zero_points_are_the_anchor_centres():
    points = MlvlPointGenerator(strides=[8, 16], offset=0.0).grid_priors([(3, 4), (2, 2)])
    anchors = AnchorGenerator(strides=[8, 16], ratios=[1.0], scales=[1.0]).grid_priors(
        [(3, 4), (2, 2)])
    for p, a in zip(points, anchors):
        assert torch.equal(p, (a[:, :2] + a[:, 2:]) / 2)


def test_grid_priors_is_cached_per_key_and_checks_the_level_count():
    generator = MlvlPointGenerator(strides=[8])
    assert generator.grid_priors([(2, 2)]) is generator.grid_priors([(2, 2)])
    assert generator.grid_priors([(2, 2)]) is not generator.grid_priors([(2, 2)], with_stride=True)
    assert generator.grid_priors([(2, 2)], dtype=torch.float16)[0].dtype == torch.float16
    with pytest.raises(ValueError, match="got 2 feature map sizes for 1 point levels"):
        generator.grid_priors([(2, 2), (1, 1)])
    assert generator.num_base_priors == [1] and generator.num_levels == 1


def test_valid_flags_cover_each_images_own_padded_area():
    generator = MlvlPointGenerator(strides=[8])
    # image 0 is 10 x 20: ceil(10/8) = 2 rows, ceil(20/8) = 3 columns of a 3 x 4 map
    (flags,) = generator.valid_flags([(3, 4)], torch.tensor([[10, 20], [24, 32]]))
    assert flags[0].reshape(3, 4).tolist() == [[True, True, True, False],
                                                [True, True, True, False],
                                                [False, False, False, False]]
    assert bool(flags[1].all())


def test_config_builds_through_the_registry_and_rejects_bad_values():
    cfg = MlvlPointGeneratorConfig(strides=[8, [16, 8]], offset=0.0)
    generator = PRIOR_GENERATORS.build(cfg)
    assert generator.strides == [(8, 8), (16, 8)] and generator.offset == 0.0
    with pytest.raises(ConfigError, match="offset"):
        validate_tree({"type": "MlvlPointGenerator", "strides": [8], "offset": 1.5},
                      MlvlPointGeneratorConfig)
    with pytest.raises(ConfigError, match="strides"):
        validate_tree({"type": "MlvlPointGenerator", "strides": []}, MlvlPointGeneratorConfig)
