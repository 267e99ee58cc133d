"""build_eval_dataset: test mode, and with on_bad="skip" the images that cannot be loaded left
out with their GT, the others untouched."""

from __future__ import annotations

import numpy as np

from detcli.data.build import build_dataset, build_eval_dataset
from detcli.data.datasets import CocoDatasetConfig
from detcli.data.synth import make_synthetic_dataset


def test_skip_drops_unloadable_images_and_only_their_gt(tmp_path):
    synth = make_synthetic_dataset(tmp_path / "s", num_train=0, num_val=8, image_size=96, seed=3)
    images = synth.img_prefix("val")
    cfg = CocoDatasetConfig(ann_file=str(synth.ann_file("val")), img_prefix=str(images))
    whole = build_dataset(cfg.model_copy(update={"test_mode": True}))
    (images / "000002.jpg").write_text("not an image")
    jpg = (images / "000006.jpg").read_bytes()
    (images / "000006.jpg").write_bytes(jpg[: len(jpg) // 2])
    (images / "000007.jpg").unlink()

    assert len(build_eval_dataset(cfg)) == 8  # "stop": nothing is read here
    kept = build_eval_dataset(cfg, on_bad="skip")
    assert kept.test_mode
    gone = {"000002.jpg", "000006.jpg", "000007.jpg"}
    survivors = [i for i, info in enumerate(whole.img_infos) if info["file_name"] not in gone]
    assert [info["file_name"] for info in kept.img_infos] == \
        [whole.img_infos[i]["file_name"] for i in survivors]
    for new, old in enumerate(survivors):
        for key, value in whole.get_ann_info(old).items():
            np.testing.assert_array_equal(kept.get_ann_info(new)[key], value)
    assert kept.num_gts_per_class().sum() == whole.num_gts_per_image()[survivors].sum()
    assert (kept.filter_report.kept, kept.filter_report.dropped_bad) == (5, 3)
    assert sorted(p.kind for p in kept.problems) == ["missing_file", "truncated_image",
                                                     "unreadable_image"]
    assert len(kept.flag) == 5
