"""``det zoo`` and ``mmdet://NAME``: the shipped table, listing and filtering, and fetching
without the network (a cached file is used as is; a download goes through torch's hub with the
entry's hash prefix, checked; offline, the error names the file and the folder)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

import detcli.zoo.mmdet as zoo
from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.engine.resume import init_from_weights
from detcli.errors import CheckpointError
from detcli.models.build import build_detector


def run(*args: str):
    return CliRunner().invoke(app, ["zoo", *args])


def test_the_table_has_every_family_and_the_presets():
    assert zoo.families() == ["atss", "cascade_rcnn", "detr", "faster_rcnn", "fcos",
                              "mask_rcnn", "retinanet", "rtmdet"]
    r50 = zoo.entry("mmdet://retinanet_r50_fpn_1x_coco")
    assert (r50.preset, r50.box_ap, r50.sha256_prefix) == ("retinanet_r50", 36.5, "c2398f9e")
    assert r50.file_name == "retinanet_r50_fpn_1x_coco_20200130-c2398f9e.pth"
    mask = zoo.entry("mask-rcnn_r50_fpn_1x_coco")
    assert mask.preset == "mask_rcnn_r50" and mask.mask_ap is not None
    assert all(e.url.endswith(f"-{e.sha256_prefix}.pth") for e in zoo.entries())


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
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("no download for a cached file"))
    assert zoo.fetch(item.name, tmp_path) == tmp_path / item.file_name


def test_a_download_is_checked_against_the_hash_prefix(tmp_path, monkeypatch):
    item = zoo.entry("atss_r50_fpn_1x_coco")
    seen = {}

    def download(url, dst, hash_prefix=None, progress=True):
        seen.update(url=url, hash_prefix=hash_prefix)
        data = b"not the checkpoint"
        with open(dst, "wb") as f:
            f.write(data)
        if not hashlib.sha256(data).hexdigest().startswith(hash_prefix):  # as torch's hub
            raise RuntimeError(f'invalid hash value (expected "{hash_prefix}")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    with pytest.raises(CheckpointError, match=f"does not have the sha256 prefix "
                                              f"{item.sha256_prefix}.*it was deleted"):
        zoo.fetch(item.name, tmp_path)
    assert seen == {"url": item.url, "hash_prefix": item.sha256_prefix}
    assert not (tmp_path / item.file_name).exists()


def test_offline_the_error_names_the_file_and_the_folder(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    item = zoo.entry("detr_r50_8xb2-150e_coco")
    with pytest.raises(CheckpointError) as caught:
        zoo.fetch("mmdet://" + item.name, tmp_path)
    message = str(caught.value)
    assert f"put {item.file_name} in the folder {tmp_path}" in message
    assert item.url in caught.value.hint  # where to download it from


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
