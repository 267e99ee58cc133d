"""The built wheel ships the presets, and ``det`` from its files finds them by name from a
folder that is not the checkout (what a ``pip install`` user gets)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "detcli" / "presets"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built offline from a copy of the sources (the checkout stays untouched)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "detcli", src / "detcli",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "-w", str(tmp / "dist"), str(src)],
        capture_output=True, text=True, timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    (built,) = (tmp / "dist").glob("detcli-*.whl")
    return built


def test_the_wheel_holds_every_preset(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"detcli/presets/{p.relative_to(PRESETS).as_posix()}" for p in PRESETS.rglob("*.toml")}
    assert len(expected) >= 18  # 10 presets and 8 _base fragments when this was written
    assert expected <= names, sorted(expected - names)


def _det(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("DET_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "detcli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_det_from_the_wheel_finds_presets_by_name_outside_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    packaged = site / "detcli" / "presets"

    listed = _det(site, work, "presets", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["retinanet_tiny_synth"]["file"] == str(packaged / "retinanet_tiny_synth.toml")
    assert rows["faster_rcnn_r50"]["family"] == "FasterRCNN"

    shown = _det(site, work, "config", "show", "retinanet_tiny_synth", "--resolved", "--origin")
    assert shown.returncode == 0, shown.stderr
    assert f"# resolved from {packaged / 'retinanet_tiny_synth.toml'} <- " in shown.stdout
    origins = [line.rsplit("# ", 1)[1] for line in shown.stdout.splitlines()
               if "# " in line and ".toml:" in line.rsplit("# ", 1)[1]]
    assert origins, shown.stdout
    for origin in origins:  # provenance names files a user can open
        file = Path(origin.rsplit(":", 1)[0])
        assert file.is_file() and packaged in file.parents, origin

    # the README's documented path works too where there is no presets/ folder
    documented = _det(site, work, "config", "show", "presets/retinanet_r50.toml", "--format", "json")
    assert documented.returncode == 0, documented.stderr
    assert json.loads(documented.stdout)["file"] == str(packaged / "retinanet_r50.toml")
