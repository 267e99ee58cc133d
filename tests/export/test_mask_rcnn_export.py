"""ONNX export of Mask R-CNN: the detections and their (N, M, 28, 28) mask probabilities in the
graph (RoIAlign on the final boxes -> mask head -> sigmoid of the detected class's channel),
run by onnxruntime on a new batch and compared with PyTorch's ``predict_batch``; pasting as the
host step of ``Detector.from_onnx``; ``det export onnx --verify`` comparing the masks.

The model is ``presets/mask_rcnn_tiny_synth.toml`` shrunk as test_two_stage_export's Faster
R-CNN (eighth-width ResNet-18, 32-channel FPN and RPN, 64-unit box head, finest_scale 16 so the
RoIs read every level) with a 16-channel mask head, and the same weight adjustments so every
image keeps M = 100 detections; the mask logits get a larger gain so the probabilities spread
over (0, 1) instead of sitting at 0.5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.errors import ExportError
from detcli.export import ExportOptions, OnnxModel, export_onnx
from detcli.export.two_stage_graph import TwoStageExportWrapper
from detcli.inference.detector import Detector
from tests.export.test_two_stage_export import detecting_model as box_detecting_model
from tests.export.test_two_stage_export import images, reference
from tests.export.tiny_export import CLASSES, ROOT

SHRINK = """
[model.backbone]
base_channels = 8
[model.neck]
out_channels = 32
[model.rpn_head]
feat_channels = 32
[model.roi_head.bbox_roi_extractor]
finest_scale = 16
[model.roi_head.mask_roi_extractor]
finest_scale = 16
[model.roi_head.bbox_head]
fc_out_channels = 64
[model.roi_head.mask_head]
conv_out_channels = 16
"""
MASK_LOGIT_GAIN = 20.0  # the random mask logits multiplied: probabilities over (0, 1)
MASK_TOL = 2e-4  # mask probabilities, onnxruntime vs PyTorch (measured: up to 7.9e-5)
BOX_TOL = 1e-3  # pixels


def write_config(path: Path, images_dir: Path, ann_file: Path) -> Path:
    path.write_text(f"""extends = ["{ROOT / 'presets' / 'mask_rcnn_tiny_synth.toml'}"]
{SHRINK}
[data]
workers_per_gpu = 0
train = false
[data.val]
ann_file = "{ann_file}"
img_prefix = "{images_dir}/"
[data.test]
ann_file = "{ann_file}"
img_prefix = "{images_dir}/"
""")
    return path


def detecting_model(config: Path) -> nn.Module:
    """test_two_stage_export's box weights, and mask logits spread by MASK_LOGIT_GAIN."""
    model = box_detecting_model(config)
    with torch.no_grad():
        model.roi_head.mask_head.conv_logits.weight.mul_(MASK_LOGIT_GAIN)
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mask_rcnn_export")
    synth = make_synthetic_dataset(root / "synth", num_train=0, num_val=3, image_size=128, seed=5)
    return root, write_config(root / "mask_rcnn.toml", synth.img_prefix("val"),
                              synth.ann_file("val"))


@pytest.fixture(scope="module")
def model(setup):
    return detecting_model(setup[1])


@pytest.fixture(scope="module")
def exported(setup, model):
    """A dynamic-batch, dynamic-size export traced with (2, 3, 256, 288)."""
    path = setup[0] / "mask_rcnn.onnx"
    result = export_onnx(model, path, input_size=(256, 256),
                         options=ExportOptions(dynamic_batch=True, dynamic_size=True))
    return result, OnnxModel(path)


def test_wrapper_segments_the_detections_as_predict_batch(model):
    batch = images([(192, 224), (192, 224)], seed=11)
    ref = reference(model, batch)
    with torch.no_grad():
        boxes, scores, labels, num_dets, probs = TwoStageExportWrapper(model)(batch)
    assert int(ref.num_dets.min()) > 0 and torch.equal(labels, ref.labels)
    assert torch.allclose(boxes, ref.boxes, atol=BOX_TOL)
    assert probs.shape == (2, 100, 28, 28) and ref.mask_probs.shape == probs.shape
    assert float(ref.mask_probs.std()) > 0.1  # spread-out probabilities, not all 0.5
    assert torch.allclose(probs, ref.mask_probs, atol=1e-6)


def test_onnx_graph_returns_mask_probs_that_match_pytorch_on_a_new_batch(model, exported):
    result, onnx_model = exported
    assert list(result.outputs) == ["boxes", "scores", "labels", "num_dets", "mask_probs"]
    assert result.outputs["mask_probs"][1:] == [100, 28, 28]
    batch = images([(224, 320)] * 3, seed=12)  # not the tracing batch or size
    ref = reference(model, batch)
    out = onnx_model.detections(batch)
    assert int(ref.num_dets.min()) > 0
    assert torch.equal(out.num_dets, ref.num_dets) and torch.equal(out.labels, ref.labels)
    assert torch.allclose(out.boxes, ref.boxes, atol=BOX_TOL)
    assert out.mask_probs is not None and out.mask_probs.shape == ref.mask_probs.shape
    assert float((out.mask_probs - ref.mask_probs).abs().max()) <= MASK_TOL


def test_graph_pools_the_mask_branch_on_every_level(exported):
    import onnx

    graph = onnx.load(str(exported[0].path)).graph
    ops = [node.op_type for node in graph.node]
    # 4 box levels + 4 mask levels (a RoiAlign per level and branch), the two NMS
    assert ops.count("RoiAlign") == 8 and ops.count("NonMaxSuppression") == 2


def test_detector_from_onnx_pastes_the_same_masks_as_the_checkpoint(setup, model, exported):
    root, config = setup
    checkpoint = save_checkpoint(root / "mask_rcnn.pth", model, meta={"classes": CLASSES},
                                 rng=False)
    image = (torch.rand(120, 150, 3, generator=torch.Generator().manual_seed(3)) * 255).to(
        torch.uint8).numpy()
    torch_dets = Detector.from_checkpoint(config, checkpoint, score_thr=0.5)(image)
    onnx_dets = Detector.from_onnx(config, exported[0].path, score_thr=0.5)(image)
    assert len(torch_dets) > 0 and torch.equal(torch_dets.labels, onnx_dets.labels)
    assert onnx_dets.masks is not None and onnx_dets.masks.shape == (len(onnx_dets), 120, 150)
    assert bool(onnx_dets.masks.any())
    agree = (onnx_dets.masks == torch_dets.masks).float().mean()
    assert float(agree) >= 0.999


def test_cli_export_verifies_the_masks(setup, model):
    root, config = setup
    checkpoint = save_checkpoint(root / "mask_rcnn_cli.pth", model, meta={"classes": CLASSES},
                                 rng=False)
    out = root / "cli.onnx"
    result = CliRunner().invoke(app, ["export", "onnx", str(config), str(checkpoint), "--out",
                                      str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["verification"]
    assert report["ok"] and report["num_matched"] > 0
    assert report["num_masks_compared"] == report["num_matched"]
    assert report["max_mask_diff"] <= MASK_TOL


def test_no_nms_export_of_a_mask_model_is_refused(model):
    with pytest.raises(ExportError, match="Mask R-CNN export needs the final NMS"):
        TwoStageExportWrapper(model, nms=False)
