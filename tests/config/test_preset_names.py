"""Preset names: the one rule that turns a CONFIG or an ``extends`` entry into a file, and the
list ``det presets`` shows (derived from each resolved config)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detcli.config.catalog import list_presets, read_summary
from detcli.config.loader import load_config, resolve_file
from detcli.config.presets import preset_names, presets_dir, resolve_reference
from detcli.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
PACKAGED = presets_dir()


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working directory outside the checkout, with no presets/ folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_the_presets_live_in_the_package_and_presets_links_to_them():
    assert PACKAGED == ROOT / "detcli" / "presets"
    assert (ROOT / "presets").is_symlink()
    assert (ROOT / "presets").resolve() == PACKAGED
    assert (PACKAGED / "retinanet_r50.toml").is_file()


def test_preset_names_are_paths_under_the_presets_folder_without_toml():
    top = preset_names()
    assert "retinanet_tiny_synth" in top and "faster_rcnn_r101" in top
    assert not any(n.startswith("_base/") for n in top)
    assert top == sorted(p.stem for p in PACKAGED.glob("*.toml"))
    every = preset_names(bases=True)
    assert "_base/models/retinanet_r50_fpn" in every
    assert len(every) == len(list(PACKAGED.rglob("*.toml")))


@pytest.mark.parametrize("ref", ["retinanet_r50", "retinanet_r50.toml", "presets/retinanet_r50.toml",
                                 "presets/retinanet_r50"])
def test_a_name_means_the_packaged_preset(elsewhere, ref):
    assert resolve_reference(ref) == PACKAGED / "retinanet_r50.toml"


def test_a_base_is_named_by_its_path_under_presets(elsewhere):
    assert resolve_reference("_base/models/retinanet_r50_fpn") == \
        PACKAGED / "_base" / "models" / "retinanet_r50_fpn.toml"


def test_a_path_that_exists_wins_over_the_preset_of_the_same_name(elsewhere):
    (elsewhere / "presets").mkdir()
    own = elsewhere / "presets" / "retinanet_tiny_synth.toml"
    own.write_text('extends = "retinanet_tiny_synth"\n\n[optimizer]\ntype = "AdamW"\nlr = 0.0005\n')
    assert resolve_reference("presets/retinanet_tiny_synth.toml") == Path("presets/retinanet_tiny_synth.toml")
    loaded = load_config("presets/retinanet_tiny_synth.toml")
    assert loaded.cfg.optimizer.lr == 0.0005  # the user's file, not the packaged one (0.001)
    assert loaded.files[-1] == own and loaded.files[-2] == PACKAGED / "retinanet_tiny_synth.toml"
    bare = elsewhere / "retinanet_r50"  # a file without a suffix is still a path that exists
    bare.write_text("")
    assert resolve_reference("retinanet_r50") == Path("retinanet_r50")


def test_extends_a_preset_by_name_with_provenance_that_names_the_packaged_file(elsewhere):
    mine = elsewhere / "mine.toml"
    mine.write_text('extends = "retinanet_tiny_synth"\n\n[optimizer]\ntype = "AdamW"\nlr = 0.0005\n')
    loaded = load_config(mine)
    assert loaded.cfg.optimizer.lr == 0.0005
    assert loaded.cfg.model.backbone.depth == 18 and loaded.cfg.model.backbone.base_channels == 16
    preset = PACKAGED / "retinanet_tiny_synth.toml"
    line = preset.read_text().splitlines().index("depth = 18") + 1
    assert loaded.origins[("model", "backbone", "depth")] == f"{preset}:{line}"
    assert loaded.origins[("optimizer", "lr")] == "mine.toml:5"
    for origin in loaded.origins.values():  # every file an origin names can be opened from here
        if origin.startswith(("default", "derived", "--set")):
            continue
        assert Path(origin.rsplit(":", 1)[0]).is_file(), origin


def test_extends_a_base_by_name(elsewhere):
    part = elsewhere / "part.toml"
    part.write_text('extends = "_base/schedules/schedule_1x"\n\n[lr_config]\nstep = [16, 22]\n')
    merged, origins, files = resolve_file(part)
    assert merged["lr_config"]["step"] == [16, 22]
    assert merged["lr_config"]["warmup_iters"] == 500  # from the packaged 1x schedule
    assert files == [PACKAGED / "_base" / "schedules" / "schedule_1x.toml", part]


def test_a_relative_extends_next_to_the_file_wins_over_a_preset(elsewhere):
    (elsewhere / "_base" / "schedules").mkdir(parents=True)
    local = elsewhere / "_base" / "schedules" / "schedule_1x.toml"
    local.write_text("[lr_config]\nstep = [3]\n")
    part = elsewhere / "part.toml"
    part.write_text('extends = "_base/schedules/schedule_1x.toml"\n')
    merged, _, files = resolve_file(part)
    assert merged == {"lr_config": {"step": [3]}} and files[0] == local


def test_an_unknown_name_says_where_it_looked_and_suggests_close_names(elsewhere):
    with pytest.raises(ConfigError) as info:
        resolve_reference("retinanet_r5")
    err = info.value
    assert f"{Path('retinanet_r5')} does not exist" in str(err)
    assert f"no packaged preset is named 'retinanet_r5' (in {PACKAGED})" in str(err)
    assert err.hint.startswith("did you mean 'retinanet_r50'")
    assert "det presets" in err.hint


def test_an_unknown_extends_names_the_file_that_extends_it(elsewhere):
    mine = elsewhere / "mine.toml"
    mine.write_text('extends = "fcos_tiny_synt"\n')
    with pytest.raises(ConfigError) as info:
        load_config(mine)
    err = info.value
    assert str(err).startswith("mine.toml extends 'fcos_tiny_synt', but fcos_tiny_synt does not exist")
    assert err.hint.startswith("did you mean 'fcos_tiny_synth'")
    assert "relative to the file that names them" in err.hint


@pytest.mark.parametrize("ref", ["../retinanet_r50", "/retinanet_r50.toml"])
def test_absolute_paths_and_dotdot_never_name_a_preset(elsewhere, ref):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_reference(ref)


def test_a_path_through_the_presets_symlink_is_shown_as_written(monkeypatch):
    monkeypatch.chdir(ROOT)
    loaded = load_config("presets/retinanet_r50.toml")
    assert loaded.origins[("lr_config", "step")] == "presets/_base/schedules/schedule_1x.toml:18"
    by_name = load_config("retinanet_r50")  # the packaged file, under the working directory
    assert by_name.origins[("lr_config", "step")] == "detcli/presets/_base/schedules/schedule_1x.toml:18"
    assert by_name.resolved() == loaded.resolved()


# ---- det presets: what each preset is ------------------------------------------------------

def test_every_packaged_preset_is_listed_with_what_its_config_says():
    infos = {info.name: info for info in list_presets()}
    assert sorted(infos) == preset_names()
    tiny = infos["retinanet_tiny_synth"]
    assert (tiny.family, tiny.backbone, tiny.dataset, tiny.schedule) == (
        "RetinaNet", "ResNet-18 (1/4 width)", "CocoDataset data/synth, 3 classes",
        "12 epochs, AdamW lr 0.001, step at 9, 11")
    r50 = infos["retinanet_r50"]
    assert (r50.family, r50.backbone, r50.dataset, r50.schedule) == (
        "RetinaNet", "ResNet-50", "CocoDataset data/coco, 80 classes",
        "12 epochs, SGD lr 0.01, step at 8, 11")
    assert infos["fcos_r50"].backbone == "ResNet-50 caffe"
    assert infos["fcos_r50"].backbone_channels == [256, 512, 1024, 2048]
    assert infos["faster_rcnn_r50_dcnv2"].backbone == "ResNet-50 DCNv2"
    assert (infos["retinanet_mobilenetv2"].backbone,
            infos["retinanet_mobilenetv2"].backbone_channels) == ("MobileNetV2", [32, 96, 1280])
    assert (infos["faster_rcnn_r101"].family, infos["faster_rcnn_r101"].backbone) == ("FasterRCNN", "ResNet-101")
    assert infos["faster_rcnn_r50"].schedule == "12 epochs, SGD lr 0.02, step at 8, 11"
    assert tiny.path == PACKAGED / "retinanet_tiny_synth.toml"
    assert tiny.as_dict()["summary"] == tiny.summary


def test_every_packaged_preset_declares_a_one_sentence_summary_on_its_first_line():
    for name in preset_names():
        summary = read_summary(PACKAGED / f"{name}.toml")
        assert summary and summary.endswith(".") and len(summary) <= 100, (name, summary)


def test_the_list_is_derived_from_the_resolved_config(tmp_path):
    """A preset folder of one's own: the columns follow the config, not a table kept by hand."""
    (tmp_path / "tiny_iter.toml").write_text(
        "# One line about it.\n"
        'extends = "retinanet_tiny_synth"\n\n'
        "[model.backbone]\ndepth = 34\nbase_channels = 32\n\n"
        '[runner]\ntype = "IterBasedRunner"\nmax_iters = 500\n\n'
        '[lr_config]\npolicy = "CosineAnnealing"\nmin_lr = 0.0\n\n'
        "[model.bbox_head]\nnum_classes = 1\n")
    (tmp_path / "quiet.toml").write_text('extends = "retinanet_r50"\n')
    (tmp_path / "_base").mkdir()
    (tmp_path / "_base" / "ignored.toml").write_text("not toml at all [[[")
    infos = list_presets(root=tmp_path)
    assert [i.name for i in infos] == ["quiet", "tiny_iter"]
    quiet, tiny = infos
    assert quiet.summary == "" and quiet.backbone == "ResNet-50"
    assert (tiny.summary, tiny.backbone, tiny.dataset, tiny.schedule) == (
        "One line about it.", "ResNet-34 (1/2 width)", "CocoDataset data/synth, 1 class",
        "500 iterations, AdamW lr 0.001, CosineAnnealing")


def test_names_resolve_the_same_from_any_directory(elsewhere):
    here = load_config("faster_rcnn_tiny_synth").resolved()
    os.chdir(ROOT)
    assert load_config("presets/faster_rcnn_tiny_synth.toml").resolved() == here


def test_a_run_of_a_preset_by_name_gets_the_presets_work_dir(elsewhere):
    from detcli.engine.work_dir import default_work_dir

    loaded = load_config("retinanet_tiny_synth")
    assert loaded.source == PACKAGED / "retinanet_tiny_synth.toml"
    assert default_work_dir(loaded.source) == Path("work_dirs/retinanet_tiny_synth")
