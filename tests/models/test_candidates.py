"""One candidates path: every dense head's ``candidates`` is what predict, TTA and the ONNX
graph start from, and the graph's ``static_k`` form equals the eager one.

The tiny presets' detectors (seed 0) with the classifier bias raised, so many candidates pass
the score threshold; a batch of two images of different sizes, so clipping to each image's own
size matters.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import detcli
from detcli.config.loader import load_config
from detcli.engine.tta import merge_views
from detcli.export.graph import ExportWrapper, clip_in_graph
from detcli.models.build import build_detector
from detcli.models.dense_heads.dense_predict import size_ok
from detcli.models.protocols import TrainingRule
from detcli.structures.batch import ImageBatch
from detcli.structures.dense import Candidates
from detcli.task.postprocess import nms_to_batch

PRESETS = Path(detcli.__file__).parent / "presets"
SINGLE_STAGE = ["retinanet", "fcos", "atss"]


def tiny_model(name: str, overrides: list[str] = ()) -> torch.nn.Module:
    cfg = load_config(PRESETS / f"{name}_tiny_synth.toml", list(overrides)).cfg
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    model.init_weights()
    head = model.bbox_head if hasattr(model, "bbox_head") else None
    if head is not None:
        for name_, param in head.named_parameters():
            if name_.endswith(("cls.bias", "conv_cls.bias")):
                param.data.fill_(-1.0)  # sigmoid 0.27: most candidates pass score_thr 0.05
    return model.eval()


def batch() -> ImageBatch:
    """Two images, 256 x 256 and 200 x 232, padded to 256 x 256."""
    gen = torch.Generator().manual_seed(3)
    tensor = torch.randn(2, 3, 256, 256, generator=gen)
    tensor[1, :, 200:, :] = 0
    tensor[1, :, :, 232:] = 0
    images = ImageBatch.from_tensor(tensor)
    return replace(images, img_shapes=torch.tensor([[256, 256], [200, 232]]), fills_batch=False)


@pytest.mark.parametrize("name", SINGLE_STAGE)
def test_the_graphs_static_k_candidates_equal_the_eager_ones(name):
    """``nms_pre`` 10, below every level's entries: the filler never reaches the top k, so the
    two forms must agree exactly once the graph clips as the decoder did."""
    model = tiny_model(name, ["model.test_cfg.nms_pre=10"])
    images = batch()
    head = model.bbox_head
    with torch.no_grad():
        outputs = model(images.tensor)
        # score_thr at the median class score: some candidates pass, some do not
        plain = head.candidates(outputs._replace(score_factors=None), images.img_shapes)
        head.test_cfg = head.test_cfg.model_copy(update={"score_thr": float(plain.scores.median())})
        eager = head.candidates(outputs, images.img_shapes)
        wrapper = ExportWrapper(model, nms=False)
        priors = [wrapper.level_priors(level, logits)
                  for level, logits in enumerate(outputs.cls_logits)]
        graph = head.candidates(outputs, None, priors, static_k=True)
    assert eager.boxes.shape == (2, 50, 4)  # 5 levels x nms_pre
    torch.testing.assert_close(clip_in_graph(graph.boxes, images.tensor, images.img_shapes),
                               eager.boxes, rtol=0, atol=0)
    for field in ("scores", "labels", "valid"):
        assert torch.equal(getattr(graph, field), getattr(eager, field)), field
    assert 0 < int(eager.valid.sum()) < eager.valid.numel()


@pytest.mark.parametrize("name", SINGLE_STAGE)
def test_export_wrapper_masks_exactly_the_candidates_predict_keeps(name):
    model = tiny_model(name, ["model.test_cfg.nms_pre=10", "model.test_cfg.min_bbox_size=2"])
    images = batch()
    head = model.bbox_head
    with torch.no_grad():
        plain = head.candidates(model(images.tensor)._replace(score_factors=None),
                                images.img_shapes)
        head.test_cfg = head.test_cfg.model_copy(update={"score_thr": float(plain.scores.median())})
        cand = model.candidates(images)
        boxes, scores, labels = ExportWrapper(model, nms=False)(images.tensor, images.img_shapes)
    keep = cand.valid & size_ok(cand.boxes, 2.0)
    assert torch.equal(boxes, cand.boxes) and torch.equal(labels, cand.labels)
    assert torch.equal(scores, torch.where(keep, cand.scores, torch.zeros_like(cand.scores)))
    assert torch.equal(scores > 0, keep)


@pytest.mark.parametrize("name", SINGLE_STAGE)
def test_predict_is_candidates_then_one_nms(name):
    model = tiny_model(name)
    images = batch()
    cfg = model.bbox_head.test_cfg
    with torch.no_grad():
        dets = model.predict_batch(images, rescale=False)
        cand = model.candidates(images)
    expected = nms_to_batch(cand.boxes, cand.scores, cand.labels,
                            cand.valid & size_ok(cand.boxes, cfg.min_bbox_size), cfg)
    for field in ("boxes", "scores", "labels", "num_dets"):
        assert torch.equal(getattr(dets, field), getattr(expected, field)), field
    assert int(dets.num_dets.min()) > 0


@pytest.mark.parametrize("name", SINGLE_STAGE)
def test_tta_of_one_unflipped_view_is_predict(name):
    """TTA merges the same candidates with the same NMS: one view at scale 1 changes nothing."""
    model = tiny_model(name)
    images = batch()
    with torch.no_grad():
        merged = merge_views(model, [images])
        dets = model.predict_batch(images).unbind()
    for got, want in zip(merged, dets):
        assert torch.equal(got.boxes, want.boxes) and torch.equal(got.labels, want.labels)
        assert torch.equal(got.scores, want.scores)


def test_score_factors_scale_scores_after_the_threshold():
    """ATSS: a candidate is valid by its class score alone; its score is then multiplied by
    its centerness sigmoid (hand-set here to logit 0, sigmoid 0.5)."""
    model = tiny_model("atss")
    images = batch()
    with torch.no_grad():
        outputs = model(images.tensor)
        plain = model.bbox_head.candidates(outputs._replace(score_factors=None), images.img_shapes)
        halved = model.bbox_head.candidates(outputs._replace(
            score_factors=[torch.zeros_like(f) for f in outputs.score_factors]), images.img_shapes)
    assert isinstance(halved, Candidates)
    assert torch.equal(halved.valid, plain.valid)
    assert torch.equal(halved.scores, plain.scores * 0.5)


def test_heads_declare_their_training_rule():
    rules = {name: tiny_model(name).bbox_head.training_rule() for name in SINGLE_STAGE}
    positives = TrainingRule(sampler="PseudoSampler", normaliser="positives")
    assert rules == {"retinanet": positives, "fcos": positives, "atss": positives}
    rpn = tiny_model("faster_rcnn").rpn_head.training_rule()  # cross-entropy: sampled
    assert rpn == TrainingRule(sampler="RandomSampler", normaliser="positives_and_negatives")


def test_atss_keeps_every_prior_whatever_its_classification_loss():
    """MMDetection's ATSS always uses the PseudoSampler, also with a cross-entropy loss (the
    analysis tool decided by the loss type, which drifted from the head)."""
    ce = ["model.bbox_head.loss_cls={type=\"CrossEntropyLoss\", use_sigmoid=true}",
          "model.train_cfg.sampler={type=\"RandomSampler\", add_gt_as_proposals=false}"]
    atss = tiny_model("atss", ce).bbox_head
    assert atss.training_rule() == TrainingRule(sampler="PseudoSampler", normaliser="positives")
    retina = tiny_model("retinanet", ce).bbox_head
    assert retina.training_rule() == TrainingRule(sampler="RandomSampler",
                                                  normaliser="positives_and_negatives")
    assert type(retina.sampler).__name__ == "RandomSampler"
