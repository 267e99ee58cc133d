"""``det zoo`` and ``mmdet://NAME``: the shipped table, listing and filtering, and fetching
without the network (a cached file is used as is; a missing one is downloaded with the entry's
URL and hash prefix: tests/zoo/test_download.py serves one)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import detcli.zoo.mmdet as zoo
from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.config.presets import preset_names
from detcli.engine.resume import init_from_weights
from detcli.errors import CheckpointError
from detcli.models.build import build_detector


def run(*args: str):
    return CliRunner().invoke(app, ["zoo", *args])


def test_the_table_has_every_family_and_the_presets():
    assert zoo.families() == ["atss", "cascade_rcnn", "deformable_detr", "detr", "dino",
                              "faster_rcnn", "fcos", "mask_rcnn", "retinanet", "rtmdet"]
    r50 = zoo.entry("mmdet://retinanet_r50_fpn_1x_coco")
    assert (r50.preset, r50.box_ap, r50.sha256_prefix) == ("retinanet_r50", 36.5, "c2398f9e")
    assert r50.file_name == "retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth"
    mask = zoo.entry("mask-rcnn_r50_fpn_1x_coco")
    assert mask.preset == "mask_rcnn_r50" and mask.mask_ap is not None
    assert all(e.url.endswith(f"-{e.sha256_prefix}.pth") for e in zoo.entries())


def test_every_preset_the_table_names_exists_and_is_that_family():
    named = {e.name: e.preset for e in zoo.entries() if e.preset is not None}
    assert set(named.values()) <= set(preset_names())
    assert named["cascade-mask-rcnn_r50_fpn_1x_coco"] == "cascade_mask_rcnn_r50"
    assert named["deformable-detr-refine-twostage_r50_16xb2-50e_coco"] == \
        "deformable_detr_refine_twostage_r50"
    assert named["dino-4scale_r50_8xb2-12e_coco"] == "dino_4scale_r50"
    detector_types = {"retinanet": "RetinaNet", "fcos": "FCOS", "atss": "ATSS",
                      "faster_rcnn": "FasterRCNN", "mask_rcnn": "MaskRCNN",
                      "cascade_rcnn": "CascadeRCNN", "detr": "DETR",
                      "deformable_detr": "DeformableDETR", "dino": "DINO", "rtmdet": "RTMDet"}
    for item in zoo.entries():
        if item.preset is not None:
            model_type = load_config(item.preset).resolved()["model"]["type"]
            assert model_type == detector_types[item.family], item.name


def test_det_zoo_lists_filters_and_reports_json():
    listed = run("--family", "fcos", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert rows and {r["family"] for r in rows} == {"fcos"}
    assert any(r["preset"] == "fcos_r50" for r in rows)
    table = run()
    assert table.exit_code == 0 and "retinanet_r50_fpn_1x_coco" in table.stdout
    bad = run("--family", "yolo")
    assert bad.exit_code == 2 and "one of atss, cascade_rcnn" in bad.output


def test_an_unknown_name_suggests_close_ones():
    with pytest.raises(CheckpointError, match="not in det's MMDetection zoo table.*close: "
                                              "retinanet_"):
        zoo.entry("mmdet://retinanet_r9000")


def test_a_cached_file_is_used_without_the_network(tmp_path, monkeypatch):
    item = zoo.entry("atss_r50_fpn_1x_coco")
    (tmp_path / item.file_name).write_bytes(b"cached")
    monkeypatch.setattr(zoo, "download", lambda *a, **k: pytest.fail("no download when cached"))
    assert zoo.fetch(item.name, tmp_path) == tmp_path / item.file_name


def test_a_missing_file_is_downloaded_with_the_entrys_url_and_hash_prefix(tmp_path, monkeypatch):
    item = zoo.entry("detr_r50_8xb2-150e_coco")
    seen = []
    monkeypatch.setattr(zoo, "download", lambda *args: seen.append(args) or args[1])
    assert zoo.fetch("mmdet://" + item.name, tmp_path) == tmp_path / item.file_name
    assert seen == [(item.url, tmp_path / item.file_name, item.sha256_prefix)]


def test_init_from_an_mmdet_name_reads_the_cached_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    item = zoo.entry("retinanet_r18_fpn_1x_coco")
    torch.manual_seed(0)
    saved = build_detector(load_config("retinanet_tiny_synth").cfg.model)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"meta": {"CLASSES": ("a", "b", "c")}, "state_dict": saved.state_dict()},
               folder / item.file_name)  # as if downloaded earlier
    torch.manual_seed(1)
    model = build_detector(load_config("retinanet_tiny_synth").cfg.model)
    trainer = SimpleNamespace(model=model, train_dataset=SimpleNamespace(CLASSES=("a", "b", "c")))
    report = init_from_weights(trainer, f"mmdet://{item.name}")
    assert report.load.exact
    assert torch.equal(model.bbox_head.retina_cls.weight, saved.bbox_head.retina_cls.weight)


def test_the_fine_tuning_recipe_end_to_end(tmp_path, monkeypatch):
    """docs/zoo.md's recipe: det init a 3-class folder, then det train --init-from mmdet://NAME
    of an 80-class COCO file (here the tiny preset's model with 80 classes, in the hub cache
    under the entry's file name): everything but the class-specific layers loads, and those are
    named."""
    from detcli.data.synth import make_synthetic_dataset

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(zoo, "download", lambda *a: pytest.fail("the file is cached"))
    synth = make_synthetic_dataset(tmp_path / "mine", num_train=4, num_val=2, image_size=64,
                                   seed=0)
    config = tmp_path / "mine.toml"
    init = CliRunner().invoke(app, ["init", str(synth.root), "--preset", "retinanet_tiny_synth",
                                    "--out", str(config), "--yes", "--device", "cpu"])
    assert init.exit_code == 0, init.output
    item = zoo.entry("retinanet_r50_fpn_1x_coco")
    coco = build_detector(load_config("retinanet_tiny_synth",
                                      ["model.bbox_head.num_classes=80"]).cfg.model)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save({"meta": {"dataset_meta": {"classes": [f"coco{i}" for i in range(80)]}},
                "state_dict": coco.state_dict()}, cache / item.file_name)
    trained = CliRunner().invoke(app, ["train", str(config), "--init-from", f"mmdet://{item.name}",
                                       "--set", "runner.max_epochs=1", "--work-dir",
                                       str(tmp_path / "work"), "--device", "cpu"])
    assert trained.exit_code == 0, trained.output
    text = " ".join(trained.output.split())
    assert "trained on 80 classes (coco0, coco1," in text and "... and 72 more" in text
    assert "skipped bbox_head.retina_cls.weight: shape [720, 64, 3, 3] in the checkpoint, " \
           "[27, 64, 3, 3] in the model" in text
    assert "skipped bbox_head.retina_cls.bias" in text
    others = len(coco.state_dict()) - 2
    assert f"weights only: {others} tensors" in text  # every other tensor loaded
