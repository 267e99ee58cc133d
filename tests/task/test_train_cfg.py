"""DenseTrainConfig: RetinaNet's defaults and components chosen by `type` through the registries."""

import pytest
from pydantic import ValidationError

import detcli.task  # noqa: F401  (registers assigners and samplers)
from detcli.registry import ASSIGNERS, SAMPLERS, ensure_current
from detcli.task.assigners import MaxIoUAssigner, MaxIoUAssignerConfig
from detcli.task.samplers import PseudoSampler, PseudoSamplerConfig, RandomSamplerConfig
from detcli.task.train_cfg import DenseTrainConfig


def test_retinanet_defaults_build():
    cfg = DenseTrainConfig()
    assert cfg.assigner == MaxIoUAssignerConfig(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0.0)
    assert cfg.sampler == PseudoSamplerConfig()
    assert (cfg.allowed_border, cfg.pos_weight, cfg.debug) == (-1, -1.0, False)
    assert isinstance(ASSIGNERS.build(cfg.assigner), MaxIoUAssigner)
    assert isinstance(SAMPLERS.build(cfg.sampler), PseudoSampler)


def test_components_from_dicts():
    ensure_current()
    cfg = DenseTrainConfig.model_validate({
        "assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 0.7, "neg_iou_thr": [0.0, 0.3]},
        "sampler": {"type": "RandomSampler", "num": 256, "pos_fraction": 0.5},
    })
    assert cfg.assigner.neg_iou_thr == (0.0, 0.3)
    assert isinstance(cfg.sampler, RandomSamplerConfig) and cfg.sampler.num == 256


def test_bad_values_fail_validation():
    ensure_current()
    with pytest.raises(ValidationError, match="unknown assigner type"):
        DenseTrainConfig.model_validate({"assigner": {"type": "MaxIouAssigner"}})
    with pytest.raises(ValidationError, match="pos_iou_thr"):
        DenseTrainConfig.model_validate({"assigner": {"type": "MaxIoUAssigner", "pos_iou_thr": 2}})
    with pytest.raises(ValidationError, match="allowed_border"):
        DenseTrainConfig(allowed_border=-2)
