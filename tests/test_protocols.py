"""Capabilities are declared, typed attributes (#16): every registered prior generator,
assigner, sampler and dense head states what the ONNX graph and the analysis read from it
(detcli.task.protocols, detcli.models.protocols), so nothing asks ``hasattr``."""

import pytest

import detcli.models.build  # noqa: F401  (registers models and task modules)
from detcli.analysis import capabilities as can
from detcli.config.loader import load_config
from detcli.models.build import build_detector
from detcli.registry import ASSIGNERS, HEADS, PRIOR_GENERATORS, SAMPLERS, ensure_current
from tests.test_components import default_config


def names(registry):
    ensure_current()
    return [pytest.param(registry, name, id=name) for name in registry.names()]


@pytest.mark.parametrize("registry,name", names(PRIOR_GENERATORS))
def test_a_prior_generator_says_whether_its_priors_are_points(registry, name):
    assert isinstance(registry.get(name).priors_are_points, bool)


@pytest.mark.parametrize("registry,name", names(ASSIGNERS))
def test_an_assigner_declares_what_it_needs_and_explains(registry, name):
    assigner = registry.build(default_config(registry, name))
    assert isinstance(type(assigner).needs_predictions, bool)
    assert isinstance(type(assigner).needs_num_level_priors, bool)
    assert type(assigner).explains <= {"regions", "candidates", "costs"}
    assert assigner.pos_iou_thr is None or isinstance(assigner.pos_iou_thr, float)
    for explanation in type(assigner).explains:  # a declared explanation is a method
        assert callable(getattr(assigner, explanation))


@pytest.mark.parametrize("registry,name", names(SAMPLERS))
def test_a_sampler_declares_its_budget(registry, name):
    sampler = registry.build(default_config(registry, name))
    budget = (sampler.num, sampler.pos_fraction, sampler.max_pos)
    assert budget == (None, None, None) or all(v is not None for v in budget)
    assert isinstance(sampler.add_gt_as_proposals, bool)


@pytest.mark.parametrize("registry,name", names(HEADS))
def test_a_dense_head_says_whether_it_makes_proposals(registry, name):
    assert registry.get(name).makes_proposals is (name == "RPNHead")


def test_the_built_ins_declare_what_the_analysis_used_to_probe():
    built = {name: ASSIGNERS.build(default_config(ASSIGNERS, name)) for name in ASSIGNERS.names()}
    assert can.pos_iou_thr(built["MaxIoUAssigner"]) == 0.5
    assert can.pos_iou_thr(built["ATSSAssigner"]) is None
    assert can.lists_candidates(built["ATSSAssigner"]) and not can.explains_regions(
        built["ATSSAssigner"])
    assert not can.lists_candidates(built["MaxIoUAssigner"])
    random = SAMPLERS.build(default_config(SAMPLERS, "RandomSampler"))
    pseudo = SAMPLERS.build(default_config(SAMPLERS, "PseudoSampler"))
    assert (can.sampler_num(random), can.sampler_max_pos(random), can.sampler_adds_gt(random)) \
        == (512, 128, True)
    assert (can.sampler_num(pseudo), can.sampler_max_pos(pseudo), can.sampler_adds_gt(pseudo)) \
        == (None, None, False)
    assert can.proposal_heads() == ["RPNHead"]


@pytest.mark.parametrize("preset,two_stage,key", [
    ("retinanet_tiny_synth", False, "model.bbox_head"),
    ("faster_rcnn_tiny_synth", True, "model.rpn_head")])
def test_a_detector_declares_its_stages(preset, two_stage, key):
    model_cfg = load_config(preset, []).cfg.model
    assert model_cfg.dense_stage().head_key == key and can.is_two_stage(model_cfg) is two_stage
    model = build_detector(model_cfg)
    stages = model.stages
    assert stages.two_stage is two_stage and stages.dense_key == key
    assert stages.dense_head is (model.rpn_head if two_stage else model.bbox_head)
    assert (stages.proposal_cfg is model.test_cfg.rpn) if two_stage else stages.proposal_cfg is None


def test_a_head_whose_assigner_needs_predictions_offers_them():
    """capabilities.prediction_head trusts it: RTMDetSepBNHead's assigner ranks by its
    predictions, and the head has the PredictionAssigningHead methods the analysis calls."""
    head = HEADS.get("RTMDetSepBNHead")(num_classes=2, in_channels=8, feat_channels=8,
                                        stacked_convs=1)
    assert can.needs_predictions(head.assigner) and can.explains_costs(head.assigner)
    assert callable(head.predicted_priors) and callable(head.outputs_from_predictions)
    assert not can.explains_costs(ASSIGNERS.build(default_config(ASSIGNERS, "ATSSAssigner")))
