"""Every config error names the key path, the value, the file that set it, and a did-you-mean."""

import pytest

from detcli.config.loader import display_path, load_config
from detcli.errors import ConfigError

from .conftest import MachineConfig


def _issues(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides), schema=MachineConfig)
    return {i.path: i for i in info.value.issues}


def test_unknown_key_suggests_the_closest(write):
    top = write("top.toml", '[widget]\ntype = "Gear"\npos_iou_th = 0.4\n')
    issue = _issues(top)["widget.pos_iou_th"]
    assert "unknown key 'pos_iou_th'" in issue.message
    assert issue.hint == "did you mean 'pos_iou_thr'?"
    assert issue.origin == f"{display_path(top)}:3"
    assert issue.value == 0.4


def test_unknown_type_lists_registered_and_suggests(write):
    top = write("top.toml", '[widget]\ntype = "Gaer"\n')
    issue = _issues(top)["widget.type"]
    assert issue.message == "unknown widget type 'Gaer'; registered: Gear, Spring"
    assert issue.hint == "did you mean 'Gear'?"
    assert issue.origin == f"{display_path(top)}:2"


def test_missing_type(write):
    top = write("top.toml", "[widget]\nteeth = 3\n")
    issue = _issues(top)["widget.type"]
    assert "missing `type` for this widget; registered: Gear, Spring" in issue.message


def test_bad_value_names_constraint_value_and_origin(write):
    top = write("top.toml", '[widget]\ntype = "Gear"\n')
    issue = _issues(top, ["widget.teeth=2"])["widget.teeth"]
    assert "greater than or equal to 3" in issue.message and "got 2" in issue.message
    assert issue.origin == "--set widget.teeth=2"


def test_errors_inside_arrays_use_indices(write):
    top = write("top.toml", '[widget]\ntype = "Gear"\n[[parts]]\ntype = "Spring"\nstifness = 2\n')
    issue = _issues(top)["parts[0].stifness"]
    assert issue.hint == "did you mean 'stiffness'?"


def test_all_problems_are_reported_at_once(write):
    top = write("top.toml", 'name = 3\n[widget]\ntype = "Gear"\nteeth = "many"\n')
    issues = _issues(top)
    assert set(issues) == {"name", "widget.teeth"}


def test_missing_required_table(write):
    top = write("top.toml", 'name = "x"\n')
    assert "missing required key" in _issues(top)["widget"].message
