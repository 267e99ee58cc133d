"""det init's library: recognising COCO, VOC and YOLO folders, the survey, the seeded split,
the preset rule and the anchor verdict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from detcli.config.init_writer import CPU_PRESET, GPU_PRESET, SMALL_OBJECTS_PRESET, suggest_preset
from detcli.config.loader import load_config
from detcli.data.check import CheckReport
from detcli.data.data_yaml import parse_data_yaml
from detcli.data.discover import SplitSource, discover, split_of
from detcli.data.survey import SplitSurvey, seeded_split, survey_layout, write_split_files
from detcli.errors import DataError
from detcli.analysis.anchor_fit import check_anchor_fit
from tests.data.layouts import synth, to_voc, to_yolo


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """8 train and 4 val synthetic images of at most 96 pixels."""
    return synth(tmp_path_factory.mktemp("discover") / "synth")


def _coco_counts(data, split):
    coco = json.loads(data.ann_file(split).read_text())
    per_class = {c["name"]: sum(a["category_id"] == c["id"] for a in coco["annotations"])
                 for c in coco["categories"]}
    return len(coco["images"]), len(coco["annotations"]), per_class


def test_split_words():
    assert split_of("instances_train2017") == "train"
    assert split_of("trainval") == "train"
    assert split_of("valid") == "val" and split_of("val2017") == "val"
    assert split_of("image_info_test-dev") == "val"  # "dev" is a validation word
    assert split_of("test") == "test"
    assert split_of("_annotations.coco") is None and split_of("images") is None


@pytest.mark.parametrize("text, names", [
    ("names: [cat, 'dog']\n", ["cat", "dog"]),
    ("names:\n  - cat  # a comment\n  - \"hot dog\"\n", ["cat", "hot dog"]),
    ("names:\n  0: cat\n  2: dog\nnc: 3\n", ["cat", "class_1", "dog"]),
])
def test_data_yaml_names(text, names):
    assert parse_data_yaml("path: ../ds\ntrain: images/train\n" + text)["names"] == names


def test_data_yaml_keys_and_non_data_yaml():
    spec = parse_data_yaml("path: ../ds  # root\ntrain: images/train\nval: 'images/val'\nnc: 2\n")
    assert spec == {"path": "../ds", "train": "images/train", "val": "images/val", "nc": 2}
    assert parse_data_yaml("lr0: 0.01\nmomentum: 0.9\n") is None


def test_coco_synth_layout(shapes):
    layout = discover(shapes.root)
    assert layout.format == "coco" and set(layout.splits) == {"train", "val"}
    assert layout.splits["train"].ann_file == shapes.ann_file("train").resolve()
    assert layout.splits["train"].img_prefix == shapes.img_prefix("train").resolve()
    assert layout.splits["val"].img_prefix == shapes.img_prefix("val").resolve()
    assert layout.classes == ("square", "circle", "triangle")  # category ids 1, 2, 3


def test_coco_roboflow_layout_split_by_folder(shapes, tmp_path):
    for split, folder in (("train", "train"), ("val", "valid")):
        shutil.copytree(shapes.img_prefix(split), tmp_path / folder)
        shutil.copy(shapes.ann_file(split), tmp_path / folder / "_annotations.coco.json")
    layout = discover(tmp_path)
    assert {s: src.img_prefix.name for s, src in layout.splits.items()} == {"train": "train", "val": "valid"}


def test_coco_single_file_is_train_and_unknown_names_are_ambiguous(shapes, tmp_path):
    shutil.copytree(shapes.img_prefix("train"), tmp_path / "images")
    shutil.copy(shapes.ann_file("train"), tmp_path / "labels.json")
    layout = discover(tmp_path)
    assert list(layout.splits) == ["train"] and layout.splits["train"].img_prefix.name == "images"
    shutil.copy(shapes.ann_file("train"), tmp_path / "more.json")
    with pytest.raises(DataError, match="found 2 COCO annotation files and none is named"):
        discover(tmp_path)


def test_voc_with_image_sets(shapes, tmp_path):
    layout = discover(to_voc(shapes, tmp_path / "voc"))
    assert layout.format == "voc" and set(layout.splits) == {"train", "val"}
    assert layout.splits["val"].ann_file == tmp_path / "voc" / "ImageSets" / "Main" / "val.txt"
    assert layout.classes == ("circle", "square", "triangle")  # object names, sorted


def test_voc_without_image_sets_lists_every_xml(shapes, tmp_path):
    layout = discover(to_voc(shapes, tmp_path / "voc", image_sets=False))
    train = layout.splits["train"]
    assert list(layout.splits) == ["train"] and train.ann_file is None
    assert len(train.members) == 12 and train.members[0] == "train_000001"


def test_yolo_ultralytics_with_data_yaml(shapes, tmp_path):
    layout = discover(to_yolo(shapes, tmp_path / "y"))
    assert layout.format == "yolo" and layout.classes == ("square", "circle", "triangle")
    assert layout.splits["val"].img_prefix == tmp_path / "y" / "images" / "val"
    assert layout.num_label_classes == 3


def test_yolo_roboflow_with_classes_txt(shapes, tmp_path):
    layout = discover(to_yolo(shapes, tmp_path / "y", style="roboflow", names="classes.txt"))
    assert layout.splits["val"].img_prefix == tmp_path / "y" / "valid" / "images"
    assert layout.classes_source == "classes.txt"


def test_yolo_flat_without_names(shapes, tmp_path):
    layout = discover(to_yolo(shapes, tmp_path / "y", style="flat", names="none"))
    assert list(layout.splits) == ["train"] and layout.classes is None
    assert layout.num_label_classes == 3


def test_not_a_dataset_and_two_formats(shapes, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="is not a COCO or VOC or YOLO dataset: looked for COCO: a"):
        discover(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "missing")
    both = to_yolo(shapes, tmp_path / "both")
    shutil.copy(shapes.ann_file("train"), both / "instances_train.json")
    shutil.copytree(shapes.img_prefix("train"), both / "train")
    with pytest.raises(DataError, match="looks like COCO and YOLO at once") as err:
        discover(both)
    assert "--format coco" in err.value.hint
    assert discover(both, "yolo").format == "yolo"


def test_survey_counts_agree_with_the_coco_files(shapes, tmp_path):
    layout = discover(shapes.root)
    surveys = survey_layout(layout, layout.classes, tmp_path)
    for split in ("train", "val"):
        images, boxes, per_class = _coco_counts(shapes, split)
        s = surveys[split]
        assert s.num_images == images and s.report.num_boxes == boxes
        assert s.report.boxes_per_class == per_class and s.report.problems == []
        assert sum(s.size_counts().values()) == boxes


def test_survey_of_the_voc_and_yolo_copies_matches_coco(shapes, tmp_path):
    coco = survey_layout(discover(shapes.root), ("square", "circle", "triangle"), tmp_path / "a")
    for root in (to_voc(shapes, tmp_path / "voc", image_sets=False), to_yolo(shapes, tmp_path / "y")):
        layout = discover(root)
        other = survey_layout(layout, ("square", "circle", "triangle"), tmp_path / root.name)
        assert other["train"].report.num_boxes == coco["train"].report.num_boxes + (
            coco["val"].report.num_boxes if layout.format == "voc" else 0)  # VOC: one split of all
        np.testing.assert_allclose(np.sort(other["train"].box_wh[:, 0])[:3],
                                   np.sort(np.concatenate([coco["train"].box_wh[:, 0], coco["val"].box_wh[:, 0]])
                                           if layout.format == "voc" else coco["train"].box_wh[:, 0])[:3],
                                   atol=1e-3)


def test_seeded_split_is_deterministic_and_disjoint():
    train, val = seeded_split(20, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(20))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    again = seeded_split(20, 0.25, seed=3)
    assert (again[1] == val).all() and not (seeded_split(20, 0.25, seed=4)[1] == val).all()
    assert len(seeded_split(3, 0.01, 0)[1]) == 1  # at least one val image
    with pytest.raises(DataError, match="between 0 and 1"):
        seeded_split(20, 1.5, 0)
    with pytest.raises(DataError, match="cannot split 1 image"):
        seeded_split(1, 0.5, 0)


def test_coco_split_files_hold_their_images_and_only_their_annotations(shapes, tmp_path):
    layout = discover(shapes.root)
    survey = survey_layout(layout, layout.classes, tmp_path)["train"]
    train_idx, val_idx = seeded_split(survey.num_images, 0.25, 0)
    val = json.loads(write_split_files(layout, survey, val_idx, tmp_path, "val").read_text())
    train = json.loads(write_split_files(layout, survey, train_idx, tmp_path, "train").read_text())
    original = json.loads(shapes.ann_file("train").read_text())
    assert len(val["images"]) == 2 and len(train["images"]) == 6
    assert {i["id"] for i in val["images"]} == {int(survey.image_keys[i]) for i in val_idx}
    ids = {i["id"] for i in val["images"]}
    assert val["annotations"] == [a for a in original["annotations"] if a["image_id"] in ids]
    assert len(val["annotations"]) + len(train["annotations"]) == len(original["annotations"])
    assert val["categories"] == original["categories"]


def _survey(side: float, num: int = 10, image: int = 1000) -> SplitSurvey:
    """A survey of ``num`` square boxes of ``side`` pixels, one per image of image x image."""
    return SplitSurvey("train", SplitSource("train", Path(".")),
                       CheckReport(source="x", dataset_type="CocoDataset", num_images=num),
                       image_wh=np.full((num, 2), float(image)), box_wh=np.full((num, 2), float(side)),
                       box_image=np.arange(num), image_keys=[str(i) for i in range(num)])


def test_preset_rule():
    assert suggest_preset(_survey(100), gpu=False).name == CPU_PRESET
    # 1000 px images go to 800 px in the R50 presets (factor 0.8): 30 px -> 24 px, small
    small = suggest_preset(_survey(30), gpu=True)
    assert small.name == SMALL_OBJECTS_PRESET and small.small_share == 1.0
    assert "100% of the objects are under 32x32 px" in small.reason
    assert suggest_preset(_survey(50), gpu=True).name == GPU_PRESET  # 40 px at the input
    # at 256 px (the CPU preset), 1000 px images shrink by 0.256: 100 px -> 25.6 px
    assert suggest_preset(_survey(100), gpu=False).small_share == 1.0


def _synth_config(tmp_path, shapes, *overrides):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'extends = "{CPU_PRESET}"\n[data.train]\nann_file = "{shapes.ann_file("train")}"\n'
                   f'img_prefix = "{shapes.img_prefix("train")}"\n')
    return load_config(cfg, list(overrides)).cfg


def test_anchor_fit_on_the_synthetic_shapes(shapes, tmp_path):
    fit = check_anchor_fit(_synth_config(tmp_path, shapes), "c.toml")
    assert fit.verdict == "fits" and fit.num_gt == _coco_counts(shapes, "train")[1]
    assert fit.message.startswith("the anchors fit the data: 0 of")
    assert fit.num_zero_positive == 0 and fit.num_low_quality_only == 0


def test_anchor_fit_says_too_small_with_the_fix(shapes, tmp_path):
    # smallest anchor 8 * 16 = 128 px at stride 8: the shapes (about 30-90 px at 256) are too small
    cfg = _synth_config(tmp_path, shapes, "model.bbox_head.anchor_generator.octave_base_scale=16")
    fit = check_anchor_fit(cfg, "c.toml")
    assert fit.verdict == "too_small" and fit.anchor_sides[0] == pytest.approx(128)
    # RetinaNet's min_pos_iou = 0: every GT keeps a low-quality positive, none has a good one
    assert fit.num_zero_positive == 0 and fit.num_low_quality_only > 0.5 * fit.num_gt
    assert "the objects are too small for them" in fit.message
    assert fit.fix == "det analyze anchors c.toml --split train --optimize"


def test_anchor_fit_skips_data_without_boxes(tmp_path):
    img = tmp_path / "i"
    img.mkdir()
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"images": [{"id": 1, "file_name": "x.jpg", "width": 64, "height": 64}],
                               "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'extends = "{CPU_PRESET}"\n[model.bbox_head]\nnum_classes = 1\n'
                   f'[data.train]\nann_file = "{ann}"\nimg_prefix = "{img}"\nfilter_empty_gt = false\n')
    fit = check_anchor_fit(load_config(cfg).cfg, "c.toml")
    assert fit.verdict == "not_applicable" and "hold no GT box" in fit.message
