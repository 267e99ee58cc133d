"""The TOML writer round-trips, annotates origins; the diff reports key by key."""

import tomllib

from detcli.config.diff import diff, flatten
from detcli.config.emit import to_toml

TREE = {
    "name": "m",
    "limit": 0.5,
    "flags": [True, False],
    "model": {
        "type": "RetinaNet",
        "backbone": {"type": "ResNet", "depth": 50, "norm_cfg": {"type": "BN", "requires_grad": True}},
        "empty": {},
    },
    "data": {"train": {"pipeline": [
        {"type": "LoadImageFromFile"},
        {"type": "MultiScaleFlipAug", "img_scale": [1333, 800], "transforms": [{"type": "Pad", "size_divisor": 32}]},
    ]}},
    "workflow": [["train", 1]],
    "odd key": "needs \"quotes\"",
}


def test_round_trip():
    assert tomllib.loads(to_toml(TREE)) == TREE


def test_origin_comments_on_each_value():
    origins = {("name",): "a.toml:1", ("model", "backbone", "depth"): "--set model.backbone.depth=50",
               ("data", "train", "pipeline"): "b.toml:7"}
    text = to_toml(TREE, origins)
    lines = text.splitlines()
    assert any(line.startswith('name = "m"') and line.endswith("# a.toml:1") for line in lines)
    assert any(line.startswith("depth = 50") and line.endswith("# --set model.backbone.depth=50") for line in lines)
    assert any(line.startswith("pipeline = [") and line.endswith("# b.toml:7") for line in lines)
    assert tomllib.loads(text) == TREE  # comments do not change the data


def test_flatten_indexes_arrays_of_tables_only():
    flat = flatten(TREE)
    assert flat["data.train.pipeline[1].img_scale"] == [1333, 800]
    assert flat["flags"] == [True, False]
    assert flat["model.backbone.norm_cfg.type"] == "BN"


def test_diff_added_removed_changed():
    a = {"model": {"backbone": {"type": "ResNet", "depth": 50, "style": "pytorch"}}, "lr": 0.01}
    b = {"model": {"backbone": {"type": "ResNet", "depth": 101, "dcn": True}}, "lr": 0.01}
    changes = [(c.path, c.kind, c.old, c.new) for c in diff(a, b)]
    assert changes == [
        ("model.backbone.depth", "changed", 50, 101),
        ("model.backbone.dcn", "added", None, True),  # listed where it stands in b
        ("model.backbone.style", "removed", "pytorch", None),
    ]
    assert diff(a, a) == []
