"""ONNX export of the anchor-free FCOS (points built in the graph, distances times the stride
with ``norm_on_bbox``, centerness on the scores) and of ATSS (anchors and centerness): exports
with dynamic and static batch/size run by onnxruntime on new inputs and compared with PyTorch's
``predict_batch``; ``det export onnx --verify`` on an FCOS checkpoint.

Like tests/export/tiny_export.py, the tiny models get weights that detect: larger tower weights,
a classification bias that leaves many candidates above the score threshold, and regression
outputs of a stride or two (boxes that overlap their neighbours', so NMS has work to do).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.export import ExportOptions, ExportWrapper, OnnxModel, export_onnx
from detcli.export.verify_inputs import synthetic_images
from detcli.models.build import build_detector
from detcli.structures.batch import ImageBatch
from tests.export.tiny_export import CLASSES, ROOT

SIZE = (256, 256)  # the tiny presets' static input: fit in 256 x 256, pad to 32
SHRINK = """
[model.backbone]
base_channels = 8
[model.neck]
out_channels = 16
[model.bbox_head]
feat_channels = 16
stacked_convs = 1
norm_cfg = { type = "GN", num_groups = 8, requires_grad = true }
"""
FCOS_SETTINGS = "norm_on_bbox = true\ncenterness_on_reg = true\n"  # under [model.bbox_head]
NEW_BATCHES = (((3, 3, 224, 320), 1), ((1, 3, 320, 192), 2))  # traced with (2, 3, 256, 288)


def write_config(path: Path, preset: str, images: Path, ann_file: Path, head: str = "") -> Path:
    path.write_text(f"""extends = ["{ROOT / 'presets' / preset}"]
{SHRINK}{head}
[data]
workers_per_gpu = 0
train = false
[data.val]
ann_file = "{ann_file}"
img_prefix = "{images}/"
[data.test]
ann_file = "{ann_file}"
img_prefix = "{images}/"
""")
    return path


def detecting_model(config: Path, overrides: list[str] | None = None) -> torch.nn.Module:
    """The config's model with weights that give detections (module docstring)."""
    torch.manual_seed(0)
    model = build_detector(load_config(config, overrides or []).cfg.model).eval()
    head = model.bbox_head
    fcos = hasattr(head, "conv_cls")
    cls, reg = (head.conv_cls, head.conv_reg) if fcos else (head.atss_cls, head.atss_reg)
    with torch.no_grad():
        for conv in head.modules():
            if isinstance(conv, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        torch.nn.init.constant_(cls.bias, -4.0)
        reg.weight.mul_(0.3)
        if fcos:  # distances of ~1.5 strides (norm_on_bbox), or exp(2.5) ~ 12 px
            torch.nn.init.constant_(reg.bias, 1.5 if head.norm_on_bbox else math.log(12.0))
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fcos_atss_export")
    synth = make_synthetic_dataset(root / "synth", num_train=0, num_val=3, image_size=128, seed=5)
    images, ann_file = synth.img_prefix("val"), synth.ann_file("val")
    fcos = write_config(root / "fcos.toml", "fcos_tiny_synth.toml", images, ann_file,
                        FCOS_SETTINGS)
    atss = write_config(root / "atss.toml", "atss_tiny_synth.toml", images, ann_file)
    return root, fcos, atss


@pytest.fixture(scope="module")
def fcos(setup):
    return detecting_model(setup[1])


@pytest.fixture(scope="module")
def fcos_cli_export(setup, fcos):
    """``det export onnx`` of an FCOS checkpoint, dynamic batch and size, verified."""
    root, config, _ = setup
    checkpoint = save_checkpoint(root / "fcos.pth", fcos, meta={"classes": CLASSES}, rng=False)
    out = root / "fcos.onnx"
    result = CliRunner().invoke(app, ["export", "onnx", str(config), str(checkpoint), "--out",
                                      str(out), "--dynamic-batch", "--dynamic-size"])
    return result, out


def reference(model, batch: torch.Tensor):
    with torch.no_grad():
        return model.predict_batch(ImageBatch.from_tensor(batch), rescale=False)


def max_same_class_iou(boxes: torch.Tensor, labels: torch.Tensor) -> float:
    """Largest IoU between two different boxes (D, 4) of the same label (D,)."""
    iou = box_iou(boxes, boxes)  # (D, D)
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(len(labels), dtype=torch.bool)
    return float(iou[same].max())


def assert_matches_predict(model, runner: OnnxModel, batch: torch.Tensor) -> None:
    ref = reference(model, batch)
    boxes, scores, labels, num_dets = runner.run(batch)
    assert int(ref.num_dets.min()) > 0  # detections to compare
    assert torch.equal(num_dets, ref.num_dets) and torch.equal(labels, ref.labels)
    assert torch.allclose(boxes, ref.boxes, atol=1e-3)
    assert torch.allclose(scores, ref.scores, atol=1e-5)


def test_fcos_cli_export_with_verify_passes(fcos_cli_export):
    result, out = fcos_cli_export
    assert result.exit_code == 0, result.output
    assert out.is_file()
    for text in ("input  images (batch, 3, height, width) float32", "output num_dets (batch,)",
                 "kept detections match"):
        assert text in result.stdout, text


def test_fcos_dynamic_export_matches_predict_on_new_batches_and_sizes(fcos, fcos_cli_export):
    runner = OnnxModel(fcos_cli_export[1])
    assert runner.batch_size is None and runner.input_size is None
    for shape, seed in NEW_BATCHES:
        assert_matches_predict(fcos, runner, torch.stack(synthetic_images([shape[2:]] * shape[0],
                                                                          seed=seed)))
    # NMS ran in the graph: candidates of one class overlap by IoU > 0.5, kept boxes do not
    batch = torch.stack(synthetic_images([SIZE], seed=3))
    with torch.no_grad():
        cand_boxes, cand_scores, cand_labels = ExportWrapper(fcos, nms=False)(batch)
    boxes, _, labels, num_dets = runner.run(batch)
    passed = cand_scores[0] > 0  # (B,)
    assert max_same_class_iou(cand_boxes[0][passed], cand_labels[0][passed]) > 0.5
    kept = slice(0, int(num_dets[0]))
    assert 0 < max_same_class_iou(boxes[0][kept], labels[0][kept]) <= 0.5


def test_fcos_static_export_matches_predict_on_new_images(setup, fcos):
    result = export_onnx(fcos, setup[0] / "fcos_static.onnx", input_size=SIZE)
    assert result.input_shape == [1, 3, 256, 256]
    runner = OnnxModel(result.path)
    for seed in (4, 5):
        assert_matches_predict(fcos, runner, torch.stack(synthetic_images([SIZE], seed=seed)))


def test_atss_dynamic_export_matches_predict_on_new_batches_and_sizes(setup):
    atss = detecting_model(setup[2])
    options = ExportOptions(dynamic_batch=True, dynamic_size=True)
    result = export_onnx(atss, setup[0] / "atss.onnx", input_size=SIZE, options=options)
    runner = OnnxModel(result.path)
    for shape, seed in NEW_BATCHES:
        assert_matches_predict(atss, runner, torch.stack(synthetic_images([shape[2:]] * shape[0],
                                                                          seed=seed)))


def test_fcos_wrapper_without_norm_on_bbox_is_predict_batch(setup):
    # distances exp(reg) in pixels, centerness on the classification tower
    plain = detecting_model(setup[1], ["model.bbox_head.norm_on_bbox=false",
                                       "model.bbox_head.centerness_on_reg=false"])
    assert not plain.bbox_head.norm_on_bbox
    batch = torch.stack(synthetic_images([(160, 224)] * 2, seed=14))
    ref = reference(plain, batch)
    with torch.no_grad():
        boxes, scores, labels, num_dets = ExportWrapper(plain)(batch)
    assert int(ref.num_dets.min()) > 0
    assert torch.equal(num_dets, ref.num_dets) and torch.equal(labels, ref.labels)
    assert torch.allclose(scores, ref.scores) and torch.allclose(boxes, ref.boxes, atol=1e-4)


def test_fcos_points_are_the_point_generators(fcos):
    wrapper = ExportWrapper(fcos)
    logits = torch.zeros(1, 3, 2, 3)  # level 1 (stride 16): 2 rows, 3 columns
    assert wrapper.level_priors(1, logits).tolist() == [
        [8.0, 8.0], [24.0, 8.0], [40.0, 8.0], [8.0, 24.0], [24.0, 24.0], [40.0, 24.0]]


class ShiftedPoints:
    """A prior generator of another type than the two built-in ones (which the graph used to
    recognise by class): the head's points moved half a pixel, through the PriorGenerator
    protocol only (detcli.task.protocols)."""

    priors_are_points = True

    def __init__(self, points) -> None:
        self.points, self.strides = points, points.strides

    @property
    def num_levels(self) -> int:
        return self.points.num_levels

    @property
    def num_base_priors(self) -> list[int]:
        return self.points.num_base_priors

    def single_level_grid_priors(self, featmap_size, level, device="cpu"):
        return self.points.single_level_grid_priors(featmap_size, level, device) + 0.5

    def grid_priors(self, featmap_sizes, device="cpu", dtype=torch.float32):
        return [self.single_level_grid_priors(size, level, device).to(dtype)
                for level, size in enumerate(featmap_sizes)]

    def valid_flags(self, featmap_sizes, pad_shapes):
        return self.points.valid_flags(featmap_sizes, pad_shapes)


def test_the_graph_builds_priors_with_any_generator_of_the_protocol(setup):
    """The graph asks the head's generator for each level's priors, whatever its class: the
    shifted points give the eager path's candidates, and other boxes than the plain ones."""
    model = detecting_model(setup[1], ["model.test_cfg.nms_pre=4"])  # FCOS; k = 4 per level
    images = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = ExportWrapper(model, nms=False)(images)
        model.bbox_head.prior_generator = ShiftedPoints(model.bbox_head.prior_generator)
        eager = model.bbox_head.candidates(model(images), torch.tensor([[256, 256]]))
        boxes, scores, labels = ExportWrapper(model, nms=False)(images)
    assert boxes.shape == eager.boxes.shape == (1, 20, 4)  # 5 levels x k, each level >= k
    assert not torch.equal(boxes, plain[0])
    assert torch.equal(boxes, eager.boxes) and torch.equal(labels, eager.labels)
    assert torch.equal(scores > 0, eager.valid)
