"""A head's ``explain_assignment`` runs the assigner and sampler its loss runs; on the tiny
presets it gives the same priors, GT indices, IoUs and roles as the analysis tool's own
re-derivation (detcli/analysis/assignment.py, which det viz assign and det analyze anchors
use today), and it agrees with what the loss trains on."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import detcli
from detcli.analysis.assignment import AssignmentParts, assign_batch
from detcli.config.loader import load_config
from detcli.models.build import build_detector
from detcli.structures.assignment import (
    IGNORED_ROLE,
    NEGATIVE_ROLE,
    POSITIVE,
    UNSAMPLED,
    Assignment,
)
from detcli.structures.batch import DetTargets, ImageBatch

PRESETS = Path(detcli.__file__).parent / "presets"
PAD = (128, 160)
GT_BOXES = [torch.tensor([[10.0, 12.0, 60.0, 50.0], [70.0, 20.0, 150.0, 110.0],
                          [30.0, 80.0, 46.0, 96.0]]),
            torch.tensor([[0.0, 0.0, 128.0, 128.0]])]
GT_LABELS = [torch.tensor([0, 2, 1]), torch.tensor([1])]


def explain(name: str, overrides: list[str] = ()) -> tuple[Assignment, list, torch.nn.Module]:
    cfg = load_config(PRESETS / f"{name}_tiny_synth.toml", list(overrides)).cfg
    torch.manual_seed(0)
    model = build_detector(cfg.model).eval()
    images = ImageBatch.from_tensor(torch.zeros(2, 3, *PAD))
    targets = DetTargets.from_lists(GT_BOXES, GT_LABELS)
    with torch.no_grad():
        if hasattr(model, "rpn_head"):
            head, outputs = model.rpn_head, model(images.tensor).rpn
        else:
            head, outputs = model.bbox_head, model(images.tensor)
    ours = head.explain_assignment(outputs, images, targets,
                                   generator=torch.Generator().manual_seed(5))
    tool = assign_batch(AssignmentParts.from_config(cfg), GT_BOXES, GT_LABELS, PAD,
                        generator=torch.Generator().manual_seed(5))
    return ours, tool, head


@pytest.mark.parametrize("name", ["retinanet", "atss", "fcos", "faster_rcnn"])
def test_explain_assignment_matches_the_analysis_tool(name):
    ours, tool, _ = explain(name)
    assert torch.equal(ours.priors, tool[0].priors) and torch.equal(ours.level, tool[0].level)
    for i, image in enumerate(tool):
        assert torch.equal(ours.gt_index[i], image.gt_index)
        torch.testing.assert_close(ours.iou[i], image.assigned_iou, rtol=0, atol=1e-6)
        assert torch.equal(ours.role[i] == POSITIVE, image.sampled_pos)
        assert torch.equal(ours.role[i] == NEGATIVE_ROLE, image.sampled_neg)
    assert int(ours.positive.sum()) > 0 and int(ours.negative.sum()) > 0


def test_roles_and_labels_follow_the_codes():
    """RetinaNet (focal, PseudoSampler): a positive is trained towards its GT's class, an
    assigner-ignored prior is IGNORED, every other prior a negative; nothing is unsampled."""
    ours, _, _ = explain("retinanet")
    positive = ours.gt_index >= 0
    assert torch.equal(ours.role == POSITIVE, positive)
    assert torch.equal(ours.role == IGNORED_ROLE, ours.gt_index == -2)
    assert not bool((ours.role == UNSAMPLED).any())
    labels = torch.stack([GT_LABELS[0][ours.gt_index[0].clamp(min=0)],
                          GT_LABELS[1][ours.gt_index[1].clamp(min=0)]])  # (N, R)
    assert torch.equal(ours.labels, torch.where(positive, labels, -1))
    assert bool((ours.iou[positive] > 0).all()) and bool((ours.iou[~positive] == 0).all())
    assert ours.role_names(0)[int(positive[0].nonzero()[0])] == "positive"


def test_the_rpns_random_sampler_leaves_priors_unsampled():
    """Faster R-CNN's RPN samples 256 anchors per image: the rest of the assigned anchors are
    UNSAMPLED, and its labels are all 0 (objects)."""
    ours, _, head = explain("faster_rcnn")
    assert head.training_rule().sampler == "RandomSampler"
    drawn = (ours.role == POSITIVE) | (ours.role == NEGATIVE_ROLE)
    assert drawn.sum(dim=1).tolist() == [256, 256]
    assert bool((ours.role == UNSAMPLED).any())
    assert set(ours.labels[ours.gt_index >= 0].tolist()) == {0}


def test_explained_positives_are_what_the_loss_trains_on():
    cfg = load_config(PRESETS / "atss_tiny_synth.toml", []).cfg
    torch.manual_seed(0)
    model = build_detector(cfg.model)
    images = ImageBatch.from_tensor(torch.zeros(2, 3, *PAD))
    targets = DetTargets.from_lists(GT_BOXES, GT_LABELS)
    head = model.bbox_head
    with torch.no_grad():
        outputs = model(images.tensor)
        ours = head.explain_assignment(outputs, images, targets)
        priors = torch.cat(head.level_priors(outputs), dim=0)
        sizes = [(x.shape[-2], x.shape[-1]) for x in outputs.cls_logits]
        tgt = head.get_targets(priors, sizes, images, targets)
    assert torch.equal(ours.positive, tgt.bbox_weights > 0)
    assert torch.equal(ours.positive | ours.negative, tgt.label_weights > 0)


def test_atss_explains_its_own_rule_not_the_configured_sampler():
    """ATSS with a cross-entropy loss and a RandomSampler configured: the head keeps every
    assigned prior (PseudoSampler, as MMDetection's ATSS), so nothing is left unsampled. (The
    analysis tool's capabilities.sampler_config decides by the loss type and would sample.)"""
    overrides = ["model.bbox_head.loss_cls={type=\"CrossEntropyLoss\", use_sigmoid=true}",
                 "model.train_cfg.sampler={type=\"RandomSampler\", add_gt_as_proposals=false}"]
    ours, _, head = explain("atss", overrides)
    assert head.training_rule().sampler == "PseudoSampler"
    assert not bool((ours.role == UNSAMPLED).any())
    assert torch.equal(ours.role == POSITIVE, ours.gt_index >= 0)
