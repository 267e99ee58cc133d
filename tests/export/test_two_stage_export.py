"""ONNX export of Faster R-CNN (TwoStageExportWrapper): RPN proposals, RoIAlign and both NMS
stages in the graph, run by onnxruntime on new batches and sizes and compared with PyTorch's
``predict_batch`` and ``rpn_head.predict_proposals``; ``det export onnx --verify`` end to end.

The model is ``presets/faster_rcnn_tiny_synth.toml`` shrunk (eighth-width ResNet-18, 32-channel
FPN and RPN, 64-unit box head). Its RoI extractor has ``finest_scale = 16`` instead of 56, so
the RoIs of 256-pixel images read all four pooling levels (below 32, 64, 128 px and above)
and the dense path's level mask is exercised. Random weights are adjusted so that the
comparison has work to do and no near-ties: objectness logits spread by the RPN's convs
(Kaiming), width/height biases of 0, 1 and 2.2 on the three anchors' deltas (proposals from
16 to ~150 px, from every RPN level after the per-level NMS), and a box classifier with spread
logits and a background bias, so scores range over (0.3, 0.95) with all classes above
``score_thr`` and every image keeps M = 100 detections.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import save_checkpoint
from detcli.errors import ExportError
from detcli.export import ExportOptions, ExportWrapper, OnnxModel, export_onnx
from detcli.export.nms_op import translation_table
from detcli.export.onnx import export_wrapper, quiet_exporter
from detcli.export.two_stage_graph import TwoStageExportWrapper
from detcli.export.verify_inputs import synthetic_images
from detcli.inference.detector import Detector
from detcli.models.build import build_detector
from detcli.models.dense_heads.dense_predict import nms_to_batch
from detcli.models.roi_heads import map_roi_levels
from detcli.structures.batch import ImageBatch
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
[model.roi_head.bbox_head]
fc_out_channels = 64
"""
NEW_BATCHES = (((3, 3, 224, 320), 1), ((1, 3, 320, 192), 2))  # traced with (2, 3, 256, 288)
ANCHOR_WH_BIAS = (0.0, 1.0, 2.2)  # dw = dh bias of the three anchors: sizes x1, x2.7, x9


def write_config(path: Path, images: Path, ann_file: Path) -> Path:
    path.write_text(f"""extends = ["{ROOT / 'presets' / 'faster_rcnn_tiny_synth.toml'}"]
{SHRINK}
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


def detecting_model(config: Path, overrides: list[str] | None = None) -> nn.Module:
    """The config's Faster R-CNN with weights that give proposals and detections (module
    docstring)."""
    torch.manual_seed(0)
    model = build_detector(load_config(config, overrides or []).cfg.model).eval()
    rpn, box_head = model.rpn_head, model.roi_head.bbox_head
    with torch.no_grad():
        nn.init.kaiming_normal_(rpn.rpn_conv.weight, nonlinearity="relu")
        nn.init.normal_(rpn.rpn_cls.weight, std=0.1)
        nn.init.constant_(rpn.rpn_cls.bias, -1.0)
        nn.init.normal_(rpn.rpn_reg.weight, std=0.05)
        rpn.rpn_reg.bias.view(3, 4)[:, 2:] = torch.tensor(ANCHOR_WH_BIAS)[:, None]
        nn.init.normal_(box_head.fc_cls.weight, std=0.3)
        box_head.fc_cls.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))  # background last
        nn.init.normal_(box_head.fc_reg.weight, std=0.05)
    return model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread, as tests/engine's: on a busy 2-core machine torch's threads wait on
    each other and a tiny model's forward gets tens of times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_stage_export")
    synth = make_synthetic_dataset(root / "synth", num_train=0, num_val=3, image_size=128, seed=5)
    return root, write_config(root / "faster_rcnn.toml", synth.img_prefix("val"),
                              synth.ann_file("val"))


@pytest.fixture(scope="module")
def model(setup):
    return detecting_model(setup[1])


@pytest.fixture(scope="module")
def checkpoint(setup, model):
    return save_checkpoint(setup[0] / "faster_rcnn.pth", model, meta={"classes": CLASSES},
                           rng=False)


@pytest.fixture(scope="module")
def cli_export(setup, checkpoint):
    """``det export onnx`` of a Faster R-CNN checkpoint, dynamic batch and size, verified."""
    root, config = setup
    out = root / "faster_rcnn.onnx"
    result = CliRunner().invoke(app, ["export", "onnx", str(config), str(checkpoint), "--out",
                                      str(out), "--dynamic-batch", "--dynamic-size"])
    return result, out


def images(sizes: list[tuple[int, int]], seed: int) -> torch.Tensor:
    return torch.stack(synthetic_images(sizes, seed=seed))  # (N, 3, H, W)


def reference(model, batch: torch.Tensor, img_shapes=None):
    shapes = img_shapes or [tuple(batch.shape[-2:])] * batch.shape[0]
    batch_in = ImageBatch(tensor=batch, img_shapes=shapes, ori_shapes=shapes,
                          scale_factors=torch.ones(batch.shape[0], 4))
    with torch.no_grad():
        return model.predict_batch(batch_in, rescale=False)


def reference_proposals(model, batch: torch.Tensor):
    with torch.no_grad():
        _, rpn = model(batch)
        return model.rpn_head.predict_proposals(rpn, ImageBatch.from_tensor(batch),
                                                model.test_cfg.rpn)


def export_static(module: nn.Module, example: torch.Tensor, path: Path,
                  output_names: Sequence[str]):
    """``module`` on ``example`` (its ``images``) to ``path`` by the dynamo exporter with det's
    NMS translation, opset 18, static shapes, unoptimised -> the saved graph."""
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=["images"],
            output_names=list(output_names),
            custom_translation_table=translation_table(), opset_version=18, optimize=False)
    program.save(str(path))
    return program.model_proto.graph


def assert_same_detections(ref, boxes, scores, labels, num_dets, box_tol=1e-3, score_tol=1e-5):
    assert int(ref.num_dets.min()) > 0  # detections to compare
    assert torch.equal(num_dets, ref.num_dets) and torch.equal(labels, ref.labels)
    assert torch.allclose(boxes, ref.boxes, atol=box_tol)
    assert torch.allclose(scores, ref.scores, atol=score_tol)


class ProposalStage(nn.Module):
    """The export graph's first stage alone: images -> proposals (N, P, 4), (N, P), (N, P)."""

    def __init__(self, wrapper: TwoStageExportWrapper) -> None:
        super().__init__()
        self.wrapper = wrapper

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        _, rpn = self.wrapper.model(images)
        proposals = self.wrapper.proposals(rpn.cls_logits, rpn.bbox_deltas, images)
        return proposals.boxes, proposals.scores, proposals.valid


# ---- the exported file ---------------------------------------------------------------------


def test_cli_export_with_verify_passes(cli_export):
    result, out = cli_export
    assert result.exit_code == 0, result.output
    for text in ("input  images (batch, 3, height, width) float32", "output boxes (batch, 100, 4)",
                 "output num_dets (batch,)", "classes square, circle, triangle",
                 "kept detections match"):
        assert text in result.stdout, text
    counts = next(line for line in result.stdout.splitlines() if line.startswith("detections:"))
    # batches of 3 and 1 test images, then 1 at an odd size: 5 images x M
    assert counts == "detections: PyTorch 500, ONNX 500, matched 500"
    runner = OnnxModel(out)
    assert runner.meta_json("det.test_cfg")["max_per_img"] == 100  # the RoI head's test_cfg
    assert runner.meta_json("det.test_cfg")["score_thr"] == 0.05
    assert runner.meta_json("det.rpn_test_cfg")["max_per_img"] == 300
    assert runner.meta_json("det.rpn_test_cfg")["nms_pre"] == 500


def test_graph_has_roi_align_per_level_and_two_nms_nodes(cli_export):
    import onnx

    graph = onnx.load(str(cli_export[1])).graph
    nodes = [n for n in graph.node if n.op_type in ("RoiAlign", "NonMaxSuppression")]
    assert sum(n.op_type == "NonMaxSuppression" for n in nodes) == 2  # RPN, then final
    roi_aligns = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
                  for n in nodes if n.op_type == "RoiAlign"]
    assert sorted(a["spatial_scale"] for a in roi_aligns) == [1 / 32, 1 / 16, 1 / 8, 1 / 4]
    for attrs in roi_aligns:  # torchvision's aligned=True, sampling_ratio=0, 7 x 7 average
        assert attrs["coordinate_transformation_mode"] == b"half_pixel"
        assert attrs["sampling_ratio"] == 0 and attrs["mode"] == b"avg"
        assert attrs["output_height"] == attrs["output_width"] == 7


def test_dynamic_export_matches_predict_batch_on_new_batches_and_sizes(model, cli_export):
    runner = OnnxModel(cli_export[1])
    assert runner.batch_size is None and runner.input_size is None
    for shape, seed in NEW_BATCHES:
        batch = images([shape[2:]] * shape[0], seed)
        boxes, scores, labels, num_dets = runner.run(batch)
        assert boxes.shape == (shape[0], 100, 4)
        assert_same_detections(reference(model, batch), boxes, scores, labels, num_dets)
    # the RoIs of the last batch read every pooling level: the level mask was tested
    rois = reference_proposals(model, batch)
    levels = map_roi_levels(rois.boxes[rois.valid], 4, 16)
    assert torch.bincount(levels, minlength=4).min() > 0


def test_rpn_stage_graph_gives_predict_proposals(model, setup):
    import onnxruntime as ort

    stage = ProposalStage(TwoStageExportWrapper(model)).eval()
    path = setup[0] / "proposals.onnx"  # static (2, 3, 192, 256): the quick export
    graph = export_static(stage, images([(192, 256)] * 2, seed=0), path,
                          ["boxes", "scores", "valid"])
    assert sum(n.op_type == "NonMaxSuppression" for n in graph.node) == 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = images([(192, 256)] * 2, seed=21)  # new images
    boxes, scores, valid = (torch.from_numpy(o) for o in
                            session.run(None, {"images": batch.numpy()}))
    ref = reference_proposals(model, batch)
    assert boxes.shape == ref.boxes.shape == (2, 300, 4)
    assert torch.equal(valid, ref.valid) and int(ref.num_valid.min()) == 300
    assert torch.allclose(boxes, ref.boxes, atol=1e-3)
    assert torch.allclose(scores, ref.scores, atol=1e-5)
    # the same stage in PyTorch (the NMS op's eager implementation): the very same proposals
    with torch.no_grad():
        eager = stage(batch)
    assert torch.equal(eager[0], ref.boxes) and torch.equal(eager[1], ref.scores)


# ---- the wrapper in PyTorch ----------------------------------------------------------------


def test_wrapper_with_image_sizes_clips_like_predict_with_img_shapes(model):
    batch = images([(192, 256)] * 2, seed=13)
    shapes = [(170, 250), (192, 200)]
    ref = reference(model, batch, shapes)
    with torch.no_grad():
        boxes, scores, labels, num_dets = TwoStageExportWrapper(model)(
            batch, torch.tensor(shapes))
    assert_same_detections(ref, boxes, scores, labels, num_dets, box_tol=1e-4)
    assert float(boxes[0, :, 3].max()) <= 170 and float(boxes[1, :, 2].max()) <= 200


def test_proposals_follow_agnostic_nms_min_size_and_every_anchor(setup):
    overrides = ["model.test_cfg.rpn.nms.class_agnostic=true", "model.test_cfg.rpn.nms_pre=-1",
                 "model.test_cfg.rpn.min_bbox_size=20", "model.test_cfg.rpn.max_per_img=200"]
    model = detecting_model(setup[1], overrides)
    batch = images([(160, 224)] * 2, seed=7)
    ref = reference_proposals(model, batch)
    with torch.no_grad():
        _, rpn = model(batch)
        got = TwoStageExportWrapper(model).proposals(rpn.cls_logits, rpn.bbox_deltas, batch)
    assert torch.equal(got.valid, ref.valid) and int(ref.num_valid.min()) > 0
    assert torch.equal(got.boxes, ref.boxes) and torch.equal(got.scores, ref.scores)
    sides = torch.minimum(got.boxes[..., 2] - got.boxes[..., 0],
                          got.boxes[..., 3] - got.boxes[..., 1])  # (2, 200)
    assert bool((sides[got.valid] > 20).all())


def test_wrapper_follows_class_agnostic_nms_min_size_and_padding(setup):
    overrides = ["model.test_cfg.rcnn.nms.class_agnostic=true",
                 "model.test_cfg.rcnn.min_bbox_size=24", "model.test_cfg.rcnn.score_thr=0.6",
                 "model.test_cfg.rcnn.max_per_img=30"]
    model = detecting_model(setup[1], overrides)
    batch = images([(160, 224)] * 2, seed=8)
    ref = reference(model, batch)
    with torch.no_grad():
        boxes, scores, labels, num_dets = TwoStageExportWrapper(model)(batch)
    assert boxes.shape == (2, 30, 4)
    assert_same_detections(ref, boxes, scores, labels, num_dets, box_tol=1e-4)
    valid = torch.arange(30)[None, :] < num_dets[:, None]  # (2, 30)
    assert int(num_dets.min()) < 30  # slots left empty: the padding rule is checked
    assert bool((labels[~valid] == -1).all()) and float(boxes[~valid].abs().sum()) == 0.0
    sides = torch.minimum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])
    assert bool((sides[valid] > 24).all()) and bool((scores[valid] > 0.6).all())


def test_wrapper_with_a_class_agnostic_regressor(setup):
    # one box per proposal (fc_reg has 4 outputs) shared by every class; NMS stays per class
    model = detecting_model(setup[1], ["model.roi_head.bbox_head.reg_class_agnostic=true"])
    assert model.roi_head.bbox_head.fc_reg.out_features == 4
    batch = images([(160, 224)] * 2, seed=10)
    with torch.no_grad():
        boxes, scores, labels, num_dets = TwoStageExportWrapper(model)(batch)
    assert_same_detections(reference(model, batch), boxes, scores, labels, num_dets,
                           box_tol=1e-4)


def test_no_nms_export_with_image_sizes_predicts_like_the_checkpoint(setup, model,
                                                                    checkpoint):
    # candidates of every (proposal, class) before the final NMS, which Detector runs with
    # test_cfg.rcnn; a dynamic size (padding as PyTorch's) and image_sizes (clipping both
    # stages as PyTorch does) give the same results
    root, config = setup
    options = ExportOptions(nms=False, image_sizes=True, dynamic_size=True)
    result = export_onnx(model, root / "candidates.onnx", input_size=(256, 256), options=options)
    assert result.outputs == {"boxes": [1, 900, 4], "scores": [1, 900],
                              "labels": [1, 900]}  # P x K = 300 x 3
    from_torch = Detector.from_checkpoint(config, checkpoint, score_thr=None)  # every slot
    from_onnx = Detector.from_onnx(config, result.path, score_thr=None)
    assert not from_onnx.backend.model.has_nms
    for path in sorted((root / "synth").rglob("*.jpg")):  # 128 px, resized and padded
        ref, got = from_torch(path), from_onnx(path)
        assert len(ref) == len(got) == 100 and torch.equal(got.labels, ref.labels)
        assert torch.allclose(got.boxes, ref.boxes, atol=1e-3)
        assert torch.allclose(got.scores, ref.scores, atol=1e-5)


def test_no_nms_candidates_come_in_proposal_then_class_order(model):
    batch = images([(192, 160)] * 2, seed=9)
    with torch.no_grad():
        boxes, scores, labels = TwoStageExportWrapper(model, nms=False)(batch)
        per_class, class_scores = TwoStageExportWrapper(model).detection_candidates(
            model.extract_feat(batch), reference_proposals(model, batch), batch)
    assert labels[0, :6].tolist() == [0, 1, 2, 0, 1, 2]
    assert torch.equal(boxes, per_class.reshape(2, 900, 4))
    assert torch.equal(scores, class_scores.reshape(2, 900))
    dets = nms_to_batch(boxes, scores, labels, scores > 0, model.roi_head.test_cfg)
    assert_same_detections(reference(model, batch), dets.boxes, dets.scores, dets.labels,
                           dets.num_dets, box_tol=1e-4)


def test_soft_nms_at_rcnn_is_refused_unless_no_nms(setup):
    soft = detecting_model(setup[1], ["model.test_cfg.rcnn.nms.type=soft_nms"])
    with pytest.raises(ExportError, match="test_cfg.rcnn.nms.type = 'soft_nms' cannot be "
                                          "exported: ONNX has hard NMS only") as info:
        export_wrapper(soft)
    assert "--set model.test_cfg.rcnn.nms.type=nms" in info.value.hint
    assert "--no-nms" in info.value.hint
    assert isinstance(export_wrapper(soft, nms=False), TwoStageExportWrapper)


def test_single_stage_wrapper_names_the_two_stage_one(model):
    with pytest.raises(ExportError, match="goes through TwoStageExportWrapper"):
        ExportWrapper(model)
