"""Cascade Mask R-CNN's mask branch on hand-worked cases: one mask head per stage (from one
config or a list), each stage's loss_mask its own head's on its own positives times the stage
weight, the test-time mask the mean of the stages' sigmoids, the mask settings the config
gives a cascade with masks (and refuses without), and the class-count key a user can pass.
(MMDetection parity: test_cascade_mask_rcnn_vs_mmdet.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.config.loader import load_config, parse_override
from detcli.errors import ConfigError
from detcli.models.build import build_detector
from detcli.models.detectors import CascadeRCNN
from detcli.models.roi_heads.cascade_roi_head import CascadeRoIHead
from detcli.models.roi_heads.mask_head import FCNMaskHead
from detcli.models.roi_heads.roi_extractor import RoIAlignConfig, SingleRoIExtractor
from detcli.structures.batch import DetTargets
from detcli.structures.proposals import Proposals
from detcli.task.cascade_cfg import cascade_stage
from detcli.task.samplers.random_sampler import RandomSamplerConfig
from detcli.task.two_stage_cfg import RCNNMaskTestConfig, RCNNMaskTrainConfig
from tests.data.layouts import synth
from tests.models.roi_heads.test_cascade_roi_head import (
    CHANNELS,
    box_head,
    constant_head,
    feats,
    one_image,
)

PRESET = "cascade_mask_rcnn_tiny_synth"


def mask_head(biases: list[float] | None = None) -> FCNMaskHead:
    """A 2-class mask head on 14 x 14 RoIs -> 28 x 28; with ``biases`` its logits are those
    constants per class (zero logit weights), whatever the RoI."""
    head = FCNMaskHead(num_classes=2, in_channels=CHANNELS, num_convs=1, conv_out_channels=4)
    if biases is not None:
        with torch.no_grad():
            head.conv_logits.weight.zero_()
            head.conv_logits.bias.copy_(torch.tensor(biases))
    return head


def mask_cascade(box_heads, mask_heads, weights=(1.0, 0.5, 0.25)) -> CascadeRoIHead:
    train_cfg = [RCNNMaskTrainConfig(**dict(cascade_stage(iou).model_copy(update={
        "sampler": RandomSamplerConfig(num=64, pos_fraction=0.5, add_gt_as_proposals=True)})))
        for iou in (0.5, 0.6, 0.7)]
    return CascadeRoIHead(
        bbox_roi_extractor=[SingleRoIExtractor(featmap_strides=[4], out_channels=CHANNELS)
                            for _ in box_heads],
        bbox_head=box_heads, num_stages=3, stage_loss_weights=weights, train_cfg=train_cfg,
        mask_roi_extractor=SingleRoIExtractor(featmap_strides=[4], out_channels=CHANNELS,
                                              roi_layer=RoIAlignConfig(output_size=14)),
        mask_head=mask_heads)


def square_targets() -> DetTargets:
    """GT (0, 0, 100, 100) of class 1 whose mask is its left half, in a 300 x 300 batch."""
    mask = torch.zeros(1, 300, 300, dtype=torch.uint8)
    mask[0, :100, :50] = 1
    return DetTargets.from_lists([torch.tensor([[0.0, 0.0, 100.0, 100.0]])],
                                 [torch.tensor([1])], masks=[mask], mask_shape=(300, 300))


# ---- the heads a config builds ---------------------------------------------------------------

def test_one_mask_head_config_is_built_once_per_stage():
    model = build_detector(load_config(PRESET, []).cfg.model)
    head = model.roi_head
    assert head.with_mask and len(head.mask_head) == 3
    assert len({id(h) for h in head.mask_head}) == 3  # three heads, three sets of weights
    assert all(s.mask_head is h for s, h in zip(head.stages, head.mask_head))
    assert [h.conv_logits.out_channels for h in head.mask_head] == [3, 3, 3]
    assert not torch.equal(head.mask_head[0].conv_logits.weight,
                           head.mask_head[1].conv_logits.weight)  # each initialised anew
    # the stages train on 28 x 28 targets and paste at 0.5, Mask R-CNN's settings
    assert all(isinstance(s, RCNNMaskTrainConfig) and s.mask_size == 28
               for s in model.train_cfg.rcnn)
    assert isinstance(model.test_cfg.rcnn, RCNNMaskTestConfig)
    assert model.test_cfg.rcnn.mask_thr_binary == 0.5


def test_a_list_of_mask_heads_gives_each_stage_its_own():
    cfg = load_config(PRESET, []).cfg.model.model_dump()
    single = cfg["roi_head"]["mask_head"]
    cfg["roi_head"]["mask_head"] = [{**single, "in_channels": None, "conv_out_channels": c}
                                    for c in (16, 32, 64)]
    model = build_detector(cfg)
    assert [h.conv_logits.in_channels for h in model.roi_head.mask_head] == [16, 32, 64]
    cfg["roi_head"]["mask_head"] = cfg["roi_head"]["mask_head"][:2]
    with pytest.raises((ValidationError, ConfigError),
                       match="model.roi_head.mask_head has 2 entries but "
                             "model.roi_head.num_stages is 3"):
        build_detector(cfg)


def test_the_mask_heads_segment_the_box_heads_classes():
    with pytest.raises(ConfigError, match=r"mask_head num_classes \[5\] differ from the box "
                                          r"heads' 3"):
        load_config(PRESET, ["model.roi_head.mask_head.num_classes=5"])


@pytest.mark.parametrize("setting,key", [
    ("model.test_cfg.rcnn.mask_thr_binary=0.5", "model.test_cfg.rcnn.mask_thr_binary"),
    ("model.train_cfg.rcnn.1.mask_size=28", r"model.train_cfg.rcnn\[1\].mask_size"),
])
def test_mask_settings_without_mask_heads_are_refused(setting, key):
    with pytest.raises(ConfigError, match=key + " set but model.roi_head has no mask_head"):
        load_config("cascade_rcnn_tiny_synth", [setting])


# ---- training --------------------------------------------------------------------------------

def test_each_stage_mask_loss_is_its_own_heads_on_its_positives_weighted():
    """s{t}.loss_mask is stage t's mask head on stage t's sampled positives (pooled for all
    stages in one call), times stage_loss_weights[t]: the same number as the stage's own
    Mask R-CNN mask loss on its samples, weighted."""
    torch.manual_seed(0)
    head = mask_cascade([box_head() for _ in range(3)], [mask_head() for _ in range(3)])
    boxes = torch.tensor([[[0.0, 0.0, 100.0, 65.0], [5.0, 0.0, 100.0, 95.0],
                           [200.0, 200.0, 250.0, 250.0]]])
    proposals = Proposals(boxes, torch.ones(1, 3), torch.ones(1, 3, dtype=torch.bool))
    targets = square_targets()
    features = feats()
    losses = head.loss(features, proposals, one_image(), targets)
    assert [k for k in losses if k.endswith("loss_mask")] == [f"s{t}.loss_mask"
                                                              for t in range(3)]
    stage_samples = head.stage_samples(features, proposals, one_image(), targets)
    for t, (stage, samples, weight) in enumerate(zip(head.stages, stage_samples,
                                                     (1.0, 0.5, 0.25))):
        assert int(samples.num_pos) >= 2  # the GT box and a proposal at every stage
        with torch.no_grad():
            own = float(stage.mask_loss(features, samples, targets)["loss_mask"])
        assert own > 0
        assert float(losses[f"s{t}.loss_mask"].detach()) == pytest.approx(weight * own,
                                                                          rel=1e-6)
    losses["s2.loss_mask"].backward()  # the last stage's mask loss reaches only its own head
    assert head.mask_head[2].conv_logits.weight.grad is not None
    assert head.mask_head[0].conv_logits.weight.grad is None


def test_training_a_cascade_with_masks_needs_mask_sizes():
    box_only = [cascade_stage(0.5)] * 3
    with pytest.raises(ConfigError, match=r"train_cfg.rcnn\[t\].mask_size"):
        CascadeRoIHead(bbox_roi_extractor=[SingleRoIExtractor(featmap_strides=[4])] * 3,
                       bbox_head=[box_head() for _ in range(3)], train_cfg=box_only,
                       mask_head=[mask_head() for _ in range(3)])


# ---- test time -------------------------------------------------------------------------------

def test_the_test_time_mask_is_the_mean_of_the_stages_sigmoids():
    """Constant mask logits per stage and class: class 0 (0, ln 3, ln 3) -> sigmoids 1/2, 3/4,
    3/4, mean 2/3; class 1 (ln 3, -ln 3, 0) -> 3/4, 1/4, 1/2, mean 1/2. Each detection gets
    its class's mean at every pixel (the last stage's alone would give 3/4 and 1/2)."""
    ln3 = math.log(3.0)
    head = mask_cascade([constant_head([2.0, 1.0, 0.0]) for _ in range(3)],
                        [mask_head([0.0, ln3]), mask_head([ln3, -ln3]), mask_head([ln3, 0.0])])
    head.eval()
    proposals = Proposals(torch.tensor([[[20.0, 30.0, 120.0, 90.0]]]), torch.ones(1, 1),
                          torch.ones(1, 1, dtype=torch.bool))
    with torch.no_grad():
        dets = head.predict(feats(), proposals, one_image())
    assert int(dets.num_dets) == 2 and dets.labels[0, :2].tolist() == [0, 1]
    assert dets.mask_probs.shape == (1, 100, 28, 28)
    torch.testing.assert_close(dets.mask_probs[0, 0], torch.full((28, 28), 2 / 3))
    torch.testing.assert_close(dets.mask_probs[0, 1], torch.full((28, 28), 0.5))
    assert float(dets.mask_probs[0, 2:].abs().max()) == 0.0  # empty slots


# ---- the class count a user sets -------------------------------------------------------------

def test_the_class_count_key_is_one_set_accepts():
    key = CascadeRCNN.num_classes_key
    path, value = parse_override(f"{key}=3")
    assert path == ("model", "roi_head", "bbox_head", 0, "num_classes") and value == 3
    assert load_config(PRESET, [f"{key}=3"]).cfg.model.roi_head.bbox_head[0].num_classes == 3
    # one stage alone disagrees with the others: the message names every key to set
    with pytest.raises(ConfigError) as caught:
        load_config(PRESET, [f"{key}=5"])
    message = str(caught.value) + "".join(i.message for i in caught.value.issues)
    keys = [f"model.roi_head.bbox_head.{t}.num_classes" for t in range(3)]
    assert all(k in message for k in keys)
    loaded = load_config(PRESET, [f"{k}=5" for k in keys]
                         + ["model.roi_head.mask_head.num_classes=5"])
    assert build_detector(loaded.cfg.model).num_classes == 5


def test_det_init_on_the_mask_preset_sets_every_heads_class_count(tmp_path):
    shapes = synth(tmp_path / "shapes")
    out = tmp_path / "cascade_mask.toml"
    result = CliRunner().invoke(app, ["init", str(shapes.root), "--yes", "--preset",
                                      "cascade_mask_rcnn_r50", "--out", str(out),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    roi_head = load_config(out, []).cfg.model.roi_head
    assert [head.num_classes for head in roi_head.bbox_head] == [3, 3, 3]  # 80 in the preset
    assert roi_head.mask_head.num_classes == 3
