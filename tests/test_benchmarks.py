"""``benchmarks/gpu_suite.py`` keeps working without a GPU: ``--smoke`` runs every family's det
model (and torchvision's peer where there is one) through train, infer and the bare network
and writes the JSON the GPU run writes; without CUDA and without ``--smoke`` it refuses,
saying why. The family table (``benchmarks/suite_families.py``) and the loads it sets are
checked directly. No timing is asserted: only that every number exists, is finite and is
computed as documented."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import torch

import detcli

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the benchmarks are scripts, not a package

import suite_families  # noqa: E402
import suite_peers  # noqa: E402

SUITE = ROOT / "benchmarks" / "gpu_suite.py"
FAMILIES = {"retinanet", "fcos", "atss", "faster_rcnn", "mask_rcnn", "cascade_rcnn", "rtmdet",
            "detr", "deformable_detr", "dino"}
WITH_PEER = {"retinanet": "retinanet_resnet50_fpn", "fcos": "fcos_resnet50_fpn",
             "atss": "retinanet_resnet50_fpn (no ATSS in torchvision)",
             "faster_rcnn": "fasterrcnn_resnet50_fpn", "mask_rcnn": "maskrcnn_resnet50_fpn",
             "cascade_rcnn": "fasterrcnn_resnet50_fpn (nearest: no cascade in torchvision)"}
RATES = ("train_img_s", "infer_img_s", "bare_train_img_s", "bare_infer_img_s")


def run_suite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SUITE), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def finite_numbers(value) -> list[float]:
    """Every float in a JSON value."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in finite_numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in finite_numbers(v)]
    return [value] if isinstance(value, float) else []


def test_smoke_run_measures_every_family(tmp_path) -> None:
    out = tmp_path / "suite.json"
    done = run_suite("--smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["complete"] is True
    assert report["batch"] == 2 and report["size"] == [128, 160]
    assert all(math.isfinite(x) for x in finite_numbers(report))  # no NaN, no inf anywhere
    results = {r["family"]: r for r in report["results"]}
    assert set(results) == FAMILIES
    for name, result in results.items():
        assert result["preset"] == f"{name}_tiny_synth"
        assert result["floor"] == suite_families.FAMILIES[name].floor
        assert result["peer"] == WITH_PEER.get(name)
        rows = {"det": result["det"], "torchvision": result["torchvision"]}
        if name not in WITH_PEER:
            assert rows.pop("torchvision") is None
            assert result["train_ratio"] is None and result["infer_ratio"] is None
        for model, row in rows.items():
            assert all(row[key] > 0 for key in RATES), (name, model, row)
            for phase in ("train", "infer"):  # 1 - bare time / full time
                assert row[f"{phase}_outside"] == pytest.approx(
                    1 - row[f"{phase}_img_s"] / row[f"bare_{phase}_img_s"])
        if name in WITH_PEER:
            for phase in ("train", "infer"):
                assert result[f"{phase}_ratio"] == pytest.approx(
                    result["det"][f"{phase}_img_s"] / result["torchvision"][f"{phase}_img_s"])
    assert {a["name"] for a in report["assigners"]} == {"MaxIoUAssigner", "ATSSAssigner",
                                                         "fcos_targets"}
    assert all(a["equal"] for a in report["assigners"])
    # one light and one strong backbone alone, each against torchvision's trunk
    backbones = {b["name"]: b for b in report["backbones"]}
    assert set(backbones) == {"mobilenet_v3_large", "swin_t"}
    assert backbones["swin_t"]["det"] == "Swin-T"
    assert backbones["mobilenet_v3_large"]["out_channels"] == [40, 112, 960]
    for row in backbones.values():
        assert all(row[f"{model}_{phase}_img_s"] > 0 for model in ("det", "torchvision")
                   for phase in ("train", "infer")), row
    assert "| Swin-T vs swin_t().features |" in done.stdout
    # the printed table: a det row per family, a torchvision row per peer, ratios or "-"
    for name in FAMILIES:
        assert done.stdout.count(f"| {name} | det |") == 1, name
    for name, peer in WITH_PEER.items():
        assert f"| {name} | {peer} |" in done.stdout
    dino_row = next(line for line in done.stdout.splitlines() if line.startswith("| dino | det"))
    assert dino_row.endswith("| - | - |")
    assert "bare (detr, deformable_detr, dino): " + suite_families.FLOORS["query"] in done.stdout
    # the key number per family: det's share of each step outside the network
    summary = next(line for line in done.stdout.splitlines()
                   if line.startswith("det outside the network, train / infer (target < 10%): "))
    for name, result in results.items():
        det = result["det"]
        shares = f"{name} {det['train_outside']:.0%} / {det['infer_outside']:.0%}"
        assert shares in summary, (shares, summary)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would run the real suite")
def test_without_cuda_the_full_run_refuses_and_says_why(tmp_path) -> None:
    # through benchmarks/h200.sh, the one command for a lent GPU: its exit status is the suite's
    script = ROOT / "benchmarks" / "h200.sh"
    assert os.access(script, os.X_OK)
    done = subprocess.run([str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OUT": str(tmp_path),
                                            "PYTHON": sys.executable})
    assert done.returncode == 2
    assert "measures on a CUDA GPU" in done.stdout and "--smoke" in done.stdout
    assert "measures on a CUDA GPU" in (tmp_path / "gpu_suite.log").read_text()
    assert not (tmp_path / "gpu_suite.json").exists()


def test_every_family_names_presets_that_resolve() -> None:
    for family in suite_families.FAMILIES.values():
        for preset in (family.preset, family.smoke_preset):
            cfg = detcli.load_config(preset, overrides=["model.backbone.init_cfg=false"]).cfg
            assert cfg.model.type.lower().replace("_", "") in {
                "retinanet", "fcos", "atss", "fasterrcnn", "maskrcnn", "cascadercnn", "rtmdet",
                "detr", "deformabledetr", "dino"}, (preset, cfg.model.type)
        assert (family.peer is None) == (family.name not in WITH_PEER)


def test_hot_logits_give_the_hot_classes_their_probability() -> None:
    # K = 3, 4 hot classes asked: all 3 are hot; e^b = 0.1 * (4 - 3) / (1 - 0.3) = 1/7
    bias = suite_peers.hot_logits(3, 4, 0.1)
    assert bias.tolist() == pytest.approx([math.log(1 / 7)] * 3 + [0.0])
    assert torch.softmax(bias, 0)[:3].tolist() == pytest.approx([0.1] * 3)
    # K = 80, 4 hot: classes 0, 20, 40, 60 at probability 0.1, the rest far below score_thr
    probs = torch.softmax(suite_peers.hot_logits(80, 4, 0.1), 0)
    assert torch.nonzero(probs > 0.05).flatten().tolist() == [0, 20, 40, 60]
    assert probs[0].item() == pytest.approx(0.1)
    assert probs[1].item() == pytest.approx(0.6 / 77)  # (1 - 0.4) / 77 others


def test_two_stage_loads_are_aligned_in_every_cascade_stage() -> None:
    args = Namespace(smoke=True, tv_frozen=True, size=(128, 160), cls_bias=0.0, hot_classes=4,
                     hot_prob=0.1)
    family = suite_families.FAMILIES["cascade_rcnn"]
    ours, theirs = suite_families.build_pair(family, args)
    stages = ours.roi_head.box_stages()
    assert len(stages) == 3
    for _, head in stages:
        assert head.fc_cls.weight.abs().sum() == 0 and head.fc_reg.weight.abs().sum() == 0
        assert head.fc_cls.bias.tolist() == pytest.approx([math.log(1 / 7)] * 3 + [0.0])
    tv_bias = theirs.roi_heads.box_predictor.cls_score.bias  # background first
    assert tv_bias.tolist() == pytest.approx([0.0] + [math.log(1 / 7)] * 3)


def test_inputs_masks_fill_their_boxes_and_fixed_rois_stay_inside() -> None:
    args = Namespace(batch=2, size=(64, 96), channels_last=False)
    inputs = suite_families.make_inputs(suite_families.FAMILIES["mask_rcnn"], 3, args,
                                        torch.device("cpu"))
    boxes, masks = inputs.targets.boxes, inputs.targets.masks  # (N, G, 4), (N, G, H, W)
    assert masks.shape == (2, suite_families.NUM_GTS, 64, 96)
    # a box-filled mask covers the pixels whose centres lie inside the box
    b = boxes[0, 0].tolist()
    expected = ((torch.arange(96) + 0.5 >= b[0]) & (torch.arange(96) + 0.5 <= b[2])).sum() * (
        (torch.arange(64) + 0.5 >= b[1]) & (torch.arange(64) + 0.5 <= b[3])).sum()
    assert int(masks[0, 0].sum()) == int(expected)
    assert torch.equal(inputs.tv_targets[0]["labels"], inputs.targets.labels[0] + 1)
    rois = suite_families.fixed_rois(2, 50, (64, 96), torch.device("cpu"))
    assert rois.shape == (2, 50, 4)
    assert (rois[..., 0] >= 0).all() and (rois[..., 2] <= 96).all()
    assert (rois[..., 1] >= 0).all() and (rois[..., 3] <= 64).all()
    assert (rois[..., 2:] - rois[..., :2] >= 8).all()


def test_two_stage_floor_runs_as_many_rois_as_a_step_classifies() -> None:
    # mask_rcnn_r50: 512 sampled RoIs, 0.25 of them positive (the mask slots); 1000 test
    # proposals, 100 detections
    args = Namespace(batch=2, size=(96, 128))
    cpu = torch.device("cpu")
    for preset, sizes in (("mask_rcnn_r50", (512, 128, 1000)),
                          ("mask_rcnn_tiny_synth", (256, 64, 300))):  # 256 x 0.25; 300
        cfg = detcli.load_config(preset, overrides=["model.backbone.init_cfg=false"]).cfg
        model = detcli.build_detector(cfg.model)
        plan = suite_families.roi_plan(model, args, cpu)
        assert plan.train.shape == (2, sizes[0], 4) and plan.mask_train.shape == (2, sizes[1], 4)
        assert plan.infer.shape == (2, sizes[2], 4) and plan.mask_infer.shape == (2, 100, 4)
    # the tiny one's floor: every RoI classified, every mask RoI segmented (K = 3)
    floor = suite_families.det_floor(suite_families.FAMILIES["mask_rcnn"], model, plan,
                                     training=False)
    model.eval()
    with torch.no_grad():
        rpn, (cls_score, bbox_pred), mask_probs = floor(torch.randn(2, 3, 96, 128))
    assert cls_score.shape == (2, 300, 4) and bbox_pred.shape == (2, 300, 12)
    assert mask_probs.shape == (2, 100, 28, 28)
