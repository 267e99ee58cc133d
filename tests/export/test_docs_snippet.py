"""The onnxruntime snippet of docs/export.md ("Running the file yourself"), run as written on a
tiny exported model -- static and --dynamic-size -- with a non-square image: it runs, and prints
the detections `Detector.from_onnx` finds."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.export import ExportOptions, export_onnx
from detcli.inference import Detector
from tests.export.tiny_export import detecting_model, make_tiny_export

DOC = Path(__file__).resolve().parents[2] / "docs" / "export.md"


def snippet() -> str:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("## Running the file yourself"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "no python block under 'Running the file yourself'"
    return match.group(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("docs_snippet"), num_images=2)


@pytest.mark.parametrize("dynamic_size", [False, True], ids=["static", "dynamic-size"])
def test_snippet_runs_on_a_non_square_image_and_agrees_with_detector(tiny, tmp_path,
                                                                      monkeypatch, dynamic_size):
    model = detecting_model(tiny.config)
    export_onnx(model, tmp_path / "tiny.onnx", input_size=(256, 256),
                options=ExportOptions(dynamic_size=dynamic_size))
    source = cv2.imread(str(sorted(tiny.images.glob("*.jpg"))[0]))
    image = cv2.resize(source, (150, 90))  # landscape: resized to 256 x 154, not square
    cv2.imwrite(str(tmp_path / "image.png"), image)  # lossless, so both sides read the same
    code = snippet().replace('"image.jpg"', '"image.png"')
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(DOC), "exec"), {})  # the snippet as the docs show it
    rows = [line.split(None, 2) for line in printed.getvalue().splitlines()]
    expected = Detector.from_onnx(tiny.config, os.fspath(tmp_path / "tiny.onnx"),
                                  score_thr=None)(image)
    assert len(rows) == len(expected) > 0
    for (label, score, box), want_box, want_score, want_label in zip(
            rows, expected.boxes.tolist(), expected.scores.tolist(), expected.labels.tolist()):
        assert int(label) == want_label
        assert abs(float(score) - want_score) <= 1e-3
        found = np.array([float(v) for v in box.strip("[]").split()])
        assert np.abs(found - np.array(want_box)).max() <= 0.06  # printed rounded to 0.1
