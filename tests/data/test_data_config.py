"""DataConfig validation, build_dataset from a config, and the class-count check."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from detcli.data.build import build_dataset, check_num_classes
from detcli.data.config import DataConfig
from detcli.data.datasets import CocoDataset, CocoDatasetConfig
from detcli.errors import ConfigError
from detcli.registry import ensure_current
from tests.data.datasets.coco_files import coco_dict, write_coco


def validate(tree: dict) -> DataConfig:
    ensure_current()
    return DataConfig.model_validate(tree)


def test_defaults_follow_mmdetection():
    cfg = validate({})
    assert (cfg.samples_per_gpu, cfg.workers_per_gpu) == (2, 2)
    assert cfg.train is None and cfg.val is None and cfg.test is None
    assert (cfg.persistent_workers, cfg.group_by_aspect_ratio, cfg.on_bad_image) == (False, False, "stop")


@pytest.mark.parametrize("tree, expected", [
    ({"samples_per_gpu": 0}, "greater than or equal to 1"),
    ({"on_bad_image": "ignore"}, "'stop' or 'skip'"),
    ({"workers_per_gpu": 0, "persistent_workers": True}, "persistent_workers = true needs workers_per_gpu >= 1"),
    ({"train": {"type": "CocoDatset", "ann_file": "a.json", "img_prefix": "i"}}, "unknown dataset type"),
    ({"train": {"type": "CocoDataset", "ann_file": "a.json", "img_prefix": "i", "min_size": -1}},
     "greater than or equal to 0"),
    ({"train": {"type": "YOLODataset", "img_prefix": "i"}}, "classes\n  Field required"),
])
def test_bad_values_fail_validation(tree, expected):
    with pytest.raises(ValidationError) as err:
        validate(tree)
    assert expected in str(err.value)


def test_false_turns_a_split_and_classes_off():
    cfg = validate({"val": False, "train": {"type": "CocoDataset", "ann_file": "a.json",
                                            "img_prefix": "i", "classes": False}})
    assert cfg.val is None and cfg.train.classes is None and cfg.split("train") is cfg.train
    with pytest.raises(ConfigError, match="split must be 'train', 'val' or 'test', not 'dev'"):
        cfg.split("dev")


def test_build_dataset_from_config_builds_the_pipeline(tmp_path):
    path = write_coco(tmp_path, coco_dict())
    cfg = validate({"train": {"type": "CocoDataset", "ann_file": str(path), "img_prefix": str(tmp_path),
                              "pipeline": [{"type": "LoadAnnotations"}]}})
    ds = build_dataset(cfg.train)
    assert isinstance(ds, CocoDataset) and len(ds) == 2
    assert ds[0]["gt_labels"].tolist() == [2, 0]  # LoadAnnotations ran
    assert ds.on_bad == "stop" and build_dataset(cfg.train, on_bad="skip").on_bad == "skip"


def test_check_num_classes_names_both_numbers_and_their_sources(tmp_path):
    path = write_coco(tmp_path, coco_dict())
    ds = build_dataset(CocoDatasetConfig(ann_file=str(path), img_prefix="i"))
    check_num_classes(ds, 3)
    with pytest.raises(ConfigError) as err:
        check_num_classes(ds, 80)
    assert str(err.value) == (
        "the model and the dataset disagree on the number of classes\n"
        f"  model.bbox_head.num_classes: is 80, but the dataset {path} "
        f"has 3 classes (from the categories of {path}: a, b, c)\n"
        "    hint: set model.bbox_head.num_classes = 3, or list the classes you want in the "
        "dataset's `classes`")
    ds = build_dataset(CocoDatasetConfig(ann_file=str(path), img_prefix="i", classes=["b"]))
    with pytest.raises(ConfigError, match=r"has 1 classes \(from the `classes` setting: b\)"):
        check_num_classes(ds, 3, where="model.roi_head.bbox_head.num_classes")
