"""``Detector``: files, arrays and lists in; detections in original-image pixels out; PyTorch and
onnxruntime agree; config/ONNX mismatches and bad arrays are clear errors."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from detcli.errors import DataError, ExportError
from detcli.export import ExportOptions, export_onnx
from detcli.inference import Detector
from detcli.structures.batch import ImageBatch
from tests.export.tiny_export import CLASSES, detecting_model, make_tiny_export


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("inference"), num_images=3)


@pytest.fixture(scope="module")
def images(tiny):
    return sorted(tiny.images.glob("*.jpg"))


@pytest.fixture(scope="module")
def torch_detector(tiny):
    return Detector.from_checkpoint(tiny.config, tiny.checkpoint, score_thr=None)  # keep all


@pytest.fixture(scope="module")
def onnx_file(tiny):
    options = ExportOptions(dynamic_batch=True, dynamic_size=True, image_sizes=True)
    return export_onnx(detecting_model(tiny.config), tiny.root / "tiny.onnx",
                       input_size=(256, 256), options=options,
                       metadata={"det.classes": '["a", "b", "c"]', "det.num_classes": "3"}).path


def test_import_detcli_stays_light_and_exports_detector():
    code = ("import sys, detcli; assert 'torch' not in sys.modules; "
            "from detcli import Detector; print(Detector.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "Detector"


def test_file_and_array_give_the_same_detections_in_original_pixels(torch_detector, images):
    assert torch_detector.classes == CLASSES  # from the checkpoint's meta
    from_file = torch_detector(images[0])
    array = cv2.imread(str(images[0]))  # (h, w, 3) BGR
    from_array = torch_detector(array)
    assert len(from_file) == 100  # max_per_img: the tiny model detects plenty
    assert torch.equal(from_file.boxes, from_array.boxes)
    assert torch.equal(from_file.labels, from_array.labels)
    h, w = array.shape[:2]
    assert float(from_file.boxes[:, 0::2].max()) <= w and float(from_file.boxes[:, 1::2].max()) <= h
    assert float(from_file.boxes.min()) >= 0
    assert bool((from_file.scores[:-1] >= from_file.scores[1:]).all())  # descending


def test_boxes_are_network_boxes_divided_by_the_resize_factor(tiny, torch_detector):
    # a 128 x 80 (w x h) image fits 256 x 256 at exactly twice its size: 256 x 160, which is a
    # multiple of 32 already; so the network input is computed here by hand
    image = cv2.resize(cv2.imread(str(sorted(tiny.images.glob("*.jpg"))[1])), (128, 80))
    resized = cv2.resize(image, (256, 160), interpolation=cv2.INTER_LINEAR)[..., ::-1]  # RGB
    mean, std = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
    network = torch.from_numpy(((resized - mean) / std).astype(np.float32)).permute(2, 0, 1)
    with torch.no_grad():
        expected = detecting_model(tiny.config).predict_batch(
            ImageBatch.from_tensor(network[None]), rescale=False).unbind()[0]
    found = torch_detector(image)
    assert torch.equal(found.labels, expected.labels)
    assert torch.allclose(found.boxes, expected.boxes / 2, atol=1e-3)


def test_list_in_list_out_and_score_thr(tiny, images):
    detector = Detector.from_checkpoint(tiny.config, tiny.checkpoint, score_thr=0.3,
                                        batch_size=2)
    found = detector(list(images))
    assert isinstance(found, list) and len(found) == len(images)
    everything = Detector.from_checkpoint(tiny.config, tiny.checkpoint, score_thr=None)(
        list(images))
    for kept, allof in zip(found, everything):
        assert bool((kept.scores > 0.3).all())
        assert len(kept) == int((allof.scores > 0.3).sum())


def test_onnx_detector_agrees_with_pytorch(tiny, onnx_file, torch_detector, images):
    onnx_detector = Detector.from_onnx(tiny.config, onnx_file, score_thr=None)
    assert onnx_detector.classes == ["a", "b", "c"]  # from the file's metadata
    assert onnx_detector.backend.name == "onnxruntime"
    for path in images:
        ref, out = torch_detector(path), onnx_detector(path)
        assert torch.equal(ref.labels, out.labels)
        assert torch.allclose(ref.boxes, out.boxes, atol=1e-2)
        assert torch.allclose(ref.scores, out.scores, atol=1e-4)


def test_onnx_from_another_config_is_refused(tiny, onnx_file):
    from detcli.config.loader import load_config

    other = load_config(tiny.config, ["model.bbox_head.num_classes=2"]).cfg
    with pytest.raises(ExportError, match="num_classes: 3 in the file, 2 in the config"):
        Detector.from_onnx(other, onnx_file)


def test_onnx_with_other_class_names_than_the_config_is_refused(tiny, onnx_file):
    from detcli.config.loader import load_config

    swapped = load_config(tiny.config, ['data.test.classes=["a", "c", "b"]']).cfg
    with pytest.raises(ExportError, match=r"classes: \['a', 'b', 'c'\] in the file, "
                                          r"\['a', 'c', 'b'\] in the config"):
        Detector.from_onnx(swapped, onnx_file)
    same = load_config(tiny.config, ['data.test.classes=["a", "b", "c"]']).cfg
    assert Detector.from_onnx(same, onnx_file).classes == ["a", "b", "c"]


def test_default_score_threshold_is_the_clis():
    import inspect

    from detcli.cli.predict import predict
    from detcli.inference import DEFAULT_SCORE_THR

    assert DEFAULT_SCORE_THR == 0.3
    for factory in (Detector.from_checkpoint, Detector.from_onnx, Detector):
        assert inspect.signature(factory).parameters["score_thr"].default == DEFAULT_SCORE_THR
    assert inspect.signature(predict).parameters["score_thr"].default == DEFAULT_SCORE_THR


@pytest.mark.parametrize("array, message", [
    (np.zeros((32, 32), np.uint8), r"must be \(H, W, 3\) BGR, got shape \(32, 32\)"),
    (np.zeros((32, 32, 3), np.int32), "must be uint8"),
])
def test_bad_arrays_are_data_errors(torch_detector, array, message):
    with pytest.raises(DataError, match=message):
        torch_detector(array)


def test_unreadable_file_names_itself(torch_detector, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="broken.png"):
        torch_detector(broken)
