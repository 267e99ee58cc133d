"""extends chains, cycles, --set overrides and provenance (file:line, --set, default)."""

import pytest

from detcli.config.loader import load_config, parse_override
from detcli.errors import ConfigError

from .conftest import MachineConfig


def test_extends_applies_in_order_then_the_file(write):
    write("base/a.toml", """
        name = "a"
        steps = [1]
        [widget]
        type = "Gear"
        teeth = 20
        """)
    write("base/b.toml", """
        name = "b"
        [widget]
        teeth = 30
        """)
    top = write("top.toml", """
        extends = ["base/a.toml", "base/b.toml"]
        steps = [2, 3]
        """)
    loaded = load_config(top, schema=MachineConfig)
    assert loaded.cfg.name == "b"
    assert loaded.cfg.widget.teeth == 30
    assert loaded.cfg.steps == [2, 3]
    assert [p.name for p in loaded.files] == ["a.toml", "b.toml", "top.toml"]


def test_extends_as_a_string_and_nested_relative_paths(write):
    write("x/y/deep.toml", '[widget]\ntype = "Spring"\n')
    write("x/mid.toml", 'extends = "y/deep.toml"\nname = "mid"\n')
    top = write("top.toml", 'extends = "x/mid.toml"\n')
    cfg = load_config(top, schema=MachineConfig).cfg
    assert (cfg.name, cfg.widget.type) == ("mid", "Spring")


def test_cycle_is_detected_and_named(write):
    write("a.toml", 'extends = "b.toml"\n')
    write("b.toml", 'extends = "a.toml"\n')
    with pytest.raises(ConfigError, match=r"cycle: .*a\.toml -> .*b\.toml -> .*a\.toml"):
        load_config(write("top.toml", 'extends = "a.toml"\n'), schema=MachineConfig)


def test_missing_extends_names_both_files(write, tmp_path):
    top = write("top.toml", 'extends = "_base/nope.toml"\n')
    with pytest.raises(ConfigError) as info:
        load_config(top, schema=MachineConfig)
    message = str(info.value)
    assert "top.toml extends '_base/nope.toml'" in message
    assert str(tmp_path / "_base" / "nope.toml") in message or "_base/nope.toml does not exist" in message


def test_bad_toml_names_file_and_line(write):
    bad = write("bad.toml", "name = 'x'\nsteps = [1,\nwidget = 3\n")
    with pytest.raises(ConfigError, match=r"bad\.toml is not valid TOML: .*line 3"):
        load_config(bad, schema=MachineConfig)


def test_overrides_parse_toml_values_and_bare_strings():
    assert parse_override("lr_config.step=[16,22]") == (("lr_config", "step"), [16, 22])
    assert parse_override("model.bbox_head.num_classes=3") == (("model", "bbox_head", "num_classes"), 3)
    assert parse_override("data.train.ann_file=foo/bar.json") == (("data", "train", "ann_file"), "foo/bar.json")
    assert parse_override('name="quoted"') == (("name",), "quoted")
    assert parse_override("limit=false") == (("limit",), False)
    with pytest.raises(ConfigError, match="is not KEY=VALUE"):
        parse_override("no-equals-sign")


def test_overrides_apply_after_files_with_the_same_merge_rules(write):
    top = write("top.toml", '[widget]\ntype = "Gear"\nteeth = 20\n')
    loaded = load_config(top, ["widget.teeth=40", "steps=[16,22]", "limit=false"], schema=MachineConfig)
    assert loaded.cfg.widget.teeth == 40 and loaded.cfg.steps == [16, 22] and loaded.cfg.limit is None
    switched = load_config(top, ['widget.type="Spring"'], schema=MachineConfig).cfg
    assert switched.widget.type == "Spring"  # teeth was not inherited into the Spring


def test_override_into_an_array_element(write):
    top = write("top.toml", """
        [widget]
        type = "Gear"
        [[parts]]
        type = "Gear"
        [[parts]]
        type = "Spring"
        """)
    loaded = load_config(top, ["parts.1.stiffness=2.5"], schema=MachineConfig)
    assert loaded.cfg.parts[1].stiffness == 2.5
    assert loaded.origins[("parts",)] == "--set parts.1.stiffness=2.5"
    with pytest.raises(ConfigError, match=r"parts has no element \[5\]"):
        load_config(top, ["parts.5.stiffness=1"], schema=MachineConfig)


def test_provenance_file_line_set_and_default(write):
    write("base.toml", """
        name = "base"

        [widget]
        type = "Gear"
        teeth = 20
        """)
    top = write("top.toml", """
        extends = "base.toml"
        # a comment
        [widget]
        teeth = 21
        """)
    loaded = load_config(top, ["limit=2.0"], schema=MachineConfig)
    o = loaded.origins
    assert o[("name",)] == f"{_rel(top.parent / 'base.toml')}:1"
    assert o[("widget", "type")] == f"{_rel(top.parent / 'base.toml')}:4"
    assert o[("widget", "teeth")] == f"{_rel(top)}:4"
    assert o[("limit",)] == "--set limit=2.0"
    assert o[("steps",)] == "default"
    assert o[("widget", "pos_iou_thr")] == "default"


def _rel(path):
    from detcli.config.loader import display_path

    return display_path(path)


def test_a_folder_given_as_the_config_is_named_a_folder(tmp_path):
    """`det train presets/` used to say the config "does not exist"."""
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "b.toml").write_text("")
    (folder / "a.toml").write_text("")
    with pytest.raises(ConfigError) as info:
        load_config(folder)
    assert str(info.value) == f"config {folder} is a directory, not a TOML file; it holds a.toml, b.toml"
    assert info.value.hint == (f"name one file, e.g. {folder / 'a.toml'}; `det presets` lists the "
                               "packaged ones")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "empty")
    assert str(info.value) == f"config {tmp_path / 'empty'} is a directory, not a TOML file"
