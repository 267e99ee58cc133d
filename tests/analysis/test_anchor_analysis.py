"""The anchor report on a hand-made dataset (answers in tests/analysis/anchor_data.py), a bad
design on the synthetic set, and the JSON schema against docs/analyze.md."""

from __future__ import annotations

import json
import re

import pytest

from detcli.analysis.anchor_analysis import AnchorStudy, analyze_anchors, run_assignment
from detcli.analysis.anchor_gt import make_batches
from detcli.config.loader import load_config
from detcli.errors import DataError
from tests.analysis.anchor_data import BAD_ANCHORS, ROOT, hand_config, synth_config


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    config = hand_config(tmp_path_factory.mktemp("hand"))
    return analyze_anchors(load_config(config).cfg, "val").summary


def test_overall_numbers_by_hand(hand):
    assert hand["dataset"]["num_gt"] == 6 and hand["dataset"]["num_images_analysed"] == 3
    overall = hand["overall"]
    assert hand["zero_positive_share"] == overall["zero_positive_share"] == round(1 / 6, 4)
    assert overall["num_zero_positive"] == 1
    assert overall["best_iou"]["min"] == 0.2571 and overall["best_iou"]["max"] == 1.0
    assert overall["best_iou"]["mean"] == round((2 + 2 * 0.358974 + 0.375 + 0.257143) / 6, 4)
    assert overall["best_iou"]["median"] == round((0.358974 + 0.375) / 2, 4)
    assert overall["best_iou_above_pos_thr_share"] == round(2 / 6, 4)
    assert overall["positives_per_gt"] == {"mean": round(5 / 6, 2), "median": 1.0, "max": 1}
    assert overall["low_quality_only_share"] == 0.5  # GT1 (a.jpg), GT2, GT3
    assert overall["level_share"] == [1.0]
    assert overall["positive_level_share"] == [1.0]  # one level: every positive is on it
    # 0.2571 in [0.25, 0.3), 0.3590 twice and 0.375 in [0.35, 0.4), 1.0 twice in the last bin
    assert overall["best_iou_histogram"] == [0] * 5 + [1, 0, 3] + [0] * 11 + [2]


def test_size_buckets_and_levels_by_hand(hand):
    small, medium, large = (hand["by_size"][k] for k in ("small", "medium", "large"))
    assert (small["num_gt"], medium["num_gt"], large["num_gt"]) == (4, 2, 0)
    assert small["zero_positive_share"] == 0.25 and small["low_quality_only_share"] == 0.75
    assert small["best_iou_above_pos_thr_share"] == 0.0
    assert medium["best_iou"]["min"] == 1.0 and medium["zero_positive_share"] == 0.0
    assert large["best_iou"] is None and large["level_share"] == [None]
    assert large["positive_level_share"] == [None]
    (level,) = hand["by_level"]
    assert (level["num_gt"], level["stride"]) == (6, [32, 32])
    assert (level["num_priors"], level["positive_priors"], level["negative_priors"],
            level["ignored_priors"]) == (18, 5, 11, 2)
    assert level["ignored_prior_share"] == round(2 / 18, 4)
    assert hand["priors"]["ignored_per_image_mean"] == round(2 / 3, 1)


def test_zero_positive_list_names_the_box_in_original_pixels(hand):
    assert hand["zero_positive_gts"] == [{
        "image": "b.jpg", "image_id": 2, "box": [26.0, 0.0, 40.0, 12.0], "size": [14.0, 12.0],
        "input_box": [52.0, 0.0, 80.0, 24.0], "input_size": [28.0, 24.0], "label": 0,
        "class": "square", "best_iou": 0.359, "best_level": 0}]


def test_batch_size_does_not_change_the_numbers(tmp_path):
    study = AnchorStudy.from_config(load_config(synth_config(tmp_path)).cfg)
    shapes = {tuple(s) for s in study.gts.pad_shape.tolist()}
    assert len(study.batches) == len(shapes)  # 12 small images: one batch per padded shape
    one_by_one = make_batches(study.gts, {s: 10 ** 6 for s in shapes}, max_elements=1)
    assert len(one_by_one) == study.gts.num_images
    whole, split = study.assign(), run_assignment(study.parts, one_by_one, len(study.gts.labels))
    for name in ("best_iou", "best_level", "num_pos_per_level", "low_quality_only",
                 "ignored_per_level"):
        assert (getattr(whole, name) == getattr(split, name)).all(), name


def test_max_images_takes_the_first_images(tmp_path):
    report = analyze_anchors(load_config(hand_config(tmp_path)).cfg, "val", max_images=1).summary
    assert report["dataset"]["num_images_analysed"] == 1
    assert report["overall"]["num_gt"] == 3 and report["zero_positive_share"] == 0.0


def test_bad_design_shows_zero_positive_gts(tmp_path):
    config = synth_config(tmp_path)
    good = analyze_anchors(load_config(config).cfg).summary
    bad = analyze_anchors(load_config(config, [BAD_ANCHORS]).cfg).summary
    assert good["zero_positive_share"] == 0.0
    assert bad["zero_positive_share"] > 0.05 and bad["zero_positive_gts"]
    assert bad["overall"]["best_iou_above_pos_thr_share"] == 0.0
    assert bad["overall"]["low_quality_only_share"] > 0.85  # every positive a low-quality match
    assert bad["overall"]["level_share"][0] == 1.0  # all land on the smallest (still huge) anchors
    assert {g["best_level"] for g in bad["zero_positive_gts"]} == {0}


def test_missing_split_and_empty_data_are_data_errors(tmp_path):
    config = hand_config(tmp_path)
    with pytest.raises(DataError, match="no dataset under data.val"):
        AnchorStudy.from_config(load_config(config, ["data.val=false"]).cfg, "val")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 48, "height": 32}],
                                 "annotations": [], "categories": [{"id": 1, "name": "square"}]}))
    cfg = load_config(config, [f'data.val.ann_file="{empty}"', "data.val.test_mode=true"]).cfg
    with pytest.raises(DataError, match="the 1 analysed images of data.val hold no GT box"):
        AnchorStudy.from_config(cfg, "val")


TOP_KEYS = {"schema_version", "config", "split", "dataset", "zero_positive_share", "geometry",
            "anchors", "assigner", "sampler", "pos_iou_thr", "size_buckets", "histogram_edges",
            "overall", "by_size", "by_level", "priors", "zero_positive_gts"}
GROUP_KEYS = {"num_gt", "best_iou", "best_iou_histogram", "best_iou_above_pos_thr_share",
              "positives_per_gt", "zero_positive_share", "num_zero_positive",
              "low_quality_only_share", "level_share", "positive_level_share"}
LEVEL_KEYS = (GROUP_KEYS - {"level_share", "positive_level_share"}) | {"level", "stride", "num_priors", "positive_priors",
                                               "negative_priors", "ignored_priors", "ignored_prior_share"}


def test_json_schema_keys_and_docs(hand):
    assert set(hand) == TOP_KEYS
    assert set(hand["overall"]) == GROUP_KEYS and set(hand["by_size"]["small"]) == GROUP_KEYS
    assert set(hand["by_level"][0]) == LEVEL_KEYS
    assert set(hand["overall"]["best_iou"]) == {"mean", "min", "q05", "q25", "median", "q75", "q95", "max"}
    assert json.loads(json.dumps(hand)) == hand  # plain JSON data
    documented = set(re.findall(r"`([a-z_0-9]+)`", (ROOT / "docs" / "analyze.md").read_text()))
    keys = (TOP_KEYS | GROUP_KEYS | LEVEL_KEYS | set(hand["dataset"]) | set(hand["priors"])
            | set(hand["zero_positive_gts"][0]) | set(hand["geometry"]))
    assert keys - documented == set()
