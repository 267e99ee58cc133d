"""Merge rules: tables merge, arrays replace, a changed `type` replaces the whole table."""

from detcli.config.tree import merge


def _merge(base, over):
    base_origins = {("x",): "base"}
    merge(base, base_origins, over, {})
    return base


def test_tables_merge_key_by_key():
    base = {"model": {"backbone": {"type": "ResNet", "depth": 50, "frozen_stages": 1}}}
    _merge(base, {"model": {"backbone": {"depth": 101}}})
    assert base == {"model": {"backbone": {"type": "ResNet", "depth": 101, "frozen_stages": 1}}}


def test_arrays_replace():
    base = {"lr_config": {"step": [8, 11]}}
    _merge(base, {"lr_config": {"step": [16]}})
    assert base == {"lr_config": {"step": [16]}}


def test_changed_type_replaces_the_table():
    base = {"backbone": {"type": "ResNet", "depth": 50, "norm_eval": True}}
    _merge(base, {"backbone": {"type": "VGG", "width": 2}})
    assert base == {"backbone": {"type": "VGG", "width": 2}}


def test_same_type_still_merges():
    base = {"backbone": {"type": "ResNet", "depth": 50}}
    _merge(base, {"backbone": {"type": "ResNet", "style": "caffe"}})
    assert base == {"backbone": {"type": "ResNet", "depth": 50, "style": "caffe"}}


def test_changed_lr_policy_replaces_the_table():
    base = {"lr_config": {"policy": "step", "step": [8, 11], "warmup": "linear"}}
    _merge(base, {"lr_config": {"policy": "CosineAnnealing", "min_lr_ratio": 0.01}})
    assert base == {"lr_config": {"policy": "CosineAnnealing", "min_lr_ratio": 0.01}}


def test_origins_follow_the_values():
    base = {"a": {"type": "X", "k": 1}, "b": 2}
    origins = {("a", "type"): "base:1", ("a", "k"): "base:2", ("b",): "base:3"}
    merge(base, origins, {"a": {"type": "Y"}}, {("a", "type"): "child:1"})
    assert origins == {("a", "type"): "child:1", ("b",): "base:3"}
