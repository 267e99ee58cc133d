"""ONNX export of a tiny RetinaNet with NMS in the graph: static and dynamic batch/size exports
run by onnxruntime on new inputs and compared with PyTorch's predict_batch; no frozen outputs;
--no-nms candidates; opset and extra checks."""

from __future__ import annotations

import pytest
import torch

from detcli.config.loader import load_config
from detcli.errors import ExportError
from detcli.export import ExportOptions, ExportWrapper, OnnxModel, export_onnx, verify_onnx
from detcli.export.onnx import check_opset, tracing_input
from detcli.export.runtime import require
from detcli.export.verify_inputs import synthetic_images, verification_batches
from detcli.inference.preprocess import Preprocessor
from detcli.models.build import build_detector
from detcli.structures.batch import ImageBatch
from tests.export.tiny_export import ROOT, detecting_model, make_tiny_export

SIZE = (256, 256)  # the tiny preset's static input: fit in 256 x 256, pad to 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_export(tmp_path_factory.mktemp("onnx_export"))


@pytest.fixture(scope="module")
def model(tiny):
    return detecting_model(tiny.config)


@pytest.fixture(scope="module")
def real_images(tiny):
    preprocess = Preprocessor.from_config(load_config(tiny.config).cfg)
    return [preprocess.sample(p)["img"] for p in sorted(tiny.images.glob("*.jpg"))]


@pytest.fixture(scope="module")
def static_onnx(model, tiny):
    return export_onnx(model, tiny.root / "static.onnx", input_size=SIZE)


@pytest.fixture(scope="module")
def dynamic_onnx(model, tiny):
    options = ExportOptions(dynamic_batch=True, dynamic_size=True)
    return export_onnx(model, tiny.root / "dynamic.onnx", input_size=SIZE, options=options)


def reference(model, batch: torch.Tensor):
    with torch.no_grad():
        return model.predict_batch(ImageBatch.from_tensor(batch), rescale=False)


def test_static_export_shapes_and_metadata(static_onnx):
    assert static_onnx.opset == 18
    assert static_onnx.input_shape == [1, 3, 256, 256]
    assert static_onnx.outputs == {"boxes": [1, 100, 4], "scores": [1, 100], "labels": [1, 100],
                                   "num_dets": [1]}
    runner = OnnxModel(static_onnx.path)
    assert runner.batch_size == 1 and runner.input_size == (256, 256) and runner.has_nms
    assert runner.metadata["det.nms"] == "true"


def test_static_export_matches_pytorch_on_new_images(model, static_onnx, real_images):
    batches = verification_batches(real_images, ExportOptions(), SIZE)
    assert [tuple(b.shape) for b in batches] == [(1, 3, 256, 256)] * 3
    report = verify_onnx(model, OnnxModel(static_onnx.path), batches)
    assert report.ok, report.lines()
    assert report.num_reference == report.num_matched == 300  # 100 per image: NMS and top-M ran
    assert report.max_box_diff < 1e-3 and report.max_score_diff < 1e-5


def test_dynamic_export_takes_other_batch_sizes_and_image_sizes(model, dynamic_onnx):
    assert dynamic_onnx.input_shape == ["batch", 3, "height", "width"]
    assert dynamic_onnx.outputs["num_dets"] == ["batch"]
    runner = OnnxModel(dynamic_onnx.path)
    assert runner.batch_size is None and runner.input_size is None
    # traced with (2, 3, 256, 288); these differ in batch, height and width
    for shape, seed in (((3, 3, 224, 320), 1), ((1, 3, 320, 192), 2), ((5, 3, 96, 64), 3)):
        batch = torch.stack(synthetic_images([shape[2:]] * shape[0], seed=seed))
        ref = reference(model, batch)
        boxes, scores, labels, num_dets = runner.run(batch)
        assert boxes.shape == (shape[0], 100, 4) and labels.dtype == torch.int64
        assert torch.equal(num_dets, ref.num_dets)
        assert torch.equal(labels, ref.labels)
        assert torch.allclose(boxes, ref.boxes, atol=1e-3)
        assert torch.allclose(scores, ref.scores, atol=1e-5)
        valid = torch.arange(100)[None, :] < num_dets[:, None]  # (N, 100)
        assert bool((labels[~valid] == -1).all()) and float(scores[~valid].abs().sum()) == 0.0


def test_graph_did_not_freeze_the_tracing_run(model, dynamic_onnx):
    runner = OnnxModel(dynamic_onnx.path)
    traced = runner.run(tracing_input(SIZE, ExportOptions(dynamic_batch=True, dynamic_size=True)))
    new = torch.stack(synthetic_images([(256, 288)] * 2, seed=10))  # the tracing shape
    fresh = runner.run(new)
    assert not torch.allclose(fresh[0], traced[0])  # other boxes
    assert not torch.equal(fresh[2], traced[2])  # other labels
    assert torch.equal(fresh[2], reference(model, new).labels)
    # a flat grey image keeps far fewer boxes: the kept count is computed, not stored
    grey = torch.full((1, 3, 256, 288), 0.5)
    count = runner.run(grey)[3]
    assert torch.equal(count, reference(model, grey).num_dets)
    assert int(count[0]) != int(traced[3][0])


def test_no_nms_export_gives_masked_candidates_that_host_nms_turns_into_predict(model, tiny):
    options = ExportOptions(dynamic_batch=True, nms=False)
    result = export_onnx(model, tiny.root / "candidates.onnx", input_size=SIZE, options=options)
    assert result.outputs == {"boxes": ["batch", 5000, 4], "scores": ["batch", 5000],
                              "labels": ["batch", 5000]}  # 5 levels x nms_pre 1000
    runner = OnnxModel(result.path)
    assert not runner.has_nms
    batch = torch.stack(synthetic_images([SIZE] * 3, seed=4))
    boxes, scores, labels = runner.run(batch)
    assert float(scores.min()) == 0.0 and bool(((scores == 0) | (scores > 0.05)).all())
    report = verify_onnx(model, runner, [batch])
    assert report.ok and report.num_matched == 300


def test_wrapper_in_eager_mode_is_predict_batch(model):
    batch = torch.stack(synthetic_images([(192, 256)] * 2, seed=6))
    ref = reference(model, batch)
    with torch.no_grad():
        boxes, scores, labels, num_dets = ExportWrapper(model)(batch)
    assert torch.equal(num_dets, ref.num_dets) and torch.equal(labels, ref.labels)
    assert torch.allclose(boxes, ref.boxes, atol=1e-4) and torch.allclose(scores, ref.scores)


def test_wrapper_with_image_sizes_clips_like_predict_with_img_shapes(model):
    batch = torch.stack(synthetic_images([(192, 256)] * 2, seed=13))
    images = ImageBatch(tensor=batch, img_shapes=[(170, 250), (192, 200)],
                        ori_shapes=[(170, 250), (192, 200)], scale_factors=torch.ones(2, 4))
    with torch.no_grad():
        ref = model.predict_batch(images, rescale=False)
        boxes, scores, labels, num_dets = ExportWrapper(model)(
            batch, torch.tensor([[170, 250], [192, 200]]))
    assert torch.equal(num_dets, ref.num_dets) and torch.equal(labels, ref.labels)
    assert torch.allclose(boxes, ref.boxes, atol=1e-4)
    assert float(boxes[0, :, 3].max()) <= 170 and float(boxes[1, :, 2].max()) <= 200


def test_wrapper_follows_class_agnostic_nms_and_min_bbox_size(tiny):
    overrides = ["model.test_cfg.nms.class_agnostic=true", "model.test_cfg.min_bbox_size=12",
                 "model.test_cfg.max_per_img=30"]
    torch.manual_seed(0)
    agnostic = detecting_model(tiny.config)
    agnostic.bbox_head.test_cfg = load_config(tiny.config, overrides).cfg.model.test_cfg
    batch = torch.stack(synthetic_images([(160, 224)] * 2, seed=7))
    ref = reference(agnostic, batch)
    with torch.no_grad():
        boxes, scores, labels, num_dets = ExportWrapper(agnostic)(batch)
    assert boxes.shape == (2, 30, 4)
    assert torch.equal(num_dets, ref.num_dets) and torch.equal(labels, ref.labels)
    assert torch.allclose(boxes, ref.boxes, atol=1e-4)
    sides = torch.minimum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1])  # (2, 30)
    assert bool((sides[labels >= 0] > 12).all())


def test_wrapper_applies_a_score_factor_after_the_score_test():
    # ATSS: anchors and deltas like RetinaNet, plus centerness multiplying the kept scores
    torch.manual_seed(0)
    atss = build_detector(load_config(ROOT / "presets" / "atss_tiny_synth.toml").cfg.model).eval()
    with torch.no_grad():
        torch.nn.init.constant_(atss.bbox_head.atss_cls.bias, -1.0)  # candidates to keep
    batch = torch.stack(synthetic_images([(160, 224)] * 2, seed=14))
    ref = reference(atss, batch)
    with torch.no_grad():
        boxes, scores, labels, num_dets = ExportWrapper(atss)(batch)
    assert int(ref.num_dets.min()) > 0
    assert torch.equal(num_dets, ref.num_dets) and torch.equal(labels, ref.labels)
    assert torch.allclose(scores, ref.scores) and torch.allclose(boxes, ref.boxes, atol=1e-4)


def test_soft_nms_cannot_go_into_the_graph(tiny):
    soft = detecting_model(tiny.config)
    soft.bbox_head.test_cfg = load_config(
        tiny.config, ["model.test_cfg.nms.type=soft_nms"]).cfg.model.test_cfg
    with pytest.raises(ExportError, match="'soft_nms' cannot be exported: ONNX has hard NMS only"):
        ExportWrapper(soft)
    ExportWrapper(soft, nms=False)  # candidates only: soft-NMS runs on the host


@pytest.mark.parametrize("opset", [12, 16, 24])
def test_opset_outside_the_supported_range_is_refused(opset):
    with pytest.raises(ExportError, match=f"opset {opset} is not supported: use 17 to 23"):
        check_opset(opset)


def test_opset_17_is_written_as_17(model, tiny):
    result = export_onnx(model, tiny.root / "opset17.onnx", input_size=(64, 64),
                         options=ExportOptions(opset=17))
    assert result.opset == 17
    out = OnnxModel(result.path).run(torch.stack(synthetic_images([(64, 64)], seed=8)))
    assert out[0].shape == (1, 100, 4)


def test_missing_extra_names_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript -> ImportError
    with pytest.raises(ExportError, match="onnxscript is not installed") as info:
        require("onnx", "onnxruntime", "onnxscript")
    assert info.value.hint == "install the optional extra: pip install 'detcli[export]'"


def test_static_input_pads_smaller_images_and_refuses_larger_ones(static_onnx):
    from detcli.errors import DataError

    runner = OnnxModel(static_onnx.path)
    small = torch.stack(synthetic_images([(128, 96)], seed=9))
    assert runner.fit_input(small).shape == (1, 3, 256, 256)
    assert float(runner.fit_input(small)[..., 128:, :].abs().sum()) == 0.0
    with pytest.raises(DataError, match="does not fit the static input 256 x 256"):
        runner.fit_input(torch.zeros(1, 3, 288, 256))
    # a static batch of 1 still serves three images, one run each
    three = torch.stack(synthetic_images([(256, 256)] * 3, seed=12))
    together = runner.run(three)
    alone = runner.run(three[2:3])
    assert together[0].shape == (3, 100, 4)
    assert torch.equal(together[0][2:3], alone[0]) and torch.equal(together[3][2:], alone[3])
