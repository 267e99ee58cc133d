"""``benchmarks/gpu_suite.py`` keeps working without a GPU: ``--smoke`` runs every family's
det and torchvision models through train, infer and the bare network and writes the JSON the
GPU run writes; without CUDA and without ``--smoke`` it refuses, saying why."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
FAMILIES = {"retinanet", "fcos", "atss", "faster_rcnn"}
RATES = ("train_img_s", "infer_img_s", "bare_train_img_s", "bare_infer_img_s")


def run_suite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SUITE), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def test_smoke_run_measures_every_family_against_torchvision(tmp_path) -> None:
    out = tmp_path / "suite.json"
    done = run_suite("--smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["batch"] == 2 and report["size"] == [128, 160]
    assert {r["family"] for r in report["results"]} == FAMILIES
    for result in report["results"]:
        for model in ("det", "torchvision"):
            row = result[model]
            assert all(row[key] > 0 for key in RATES), (result["family"], model, row)
            assert row["train_outside"] < 1 and row["infer_outside"] < 1
        assert result["train_ratio"] > 0 and result["infer_ratio"] > 0
    assert result["peer"] == "fasterrcnn_resnet50_fpn"
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
    # the printed table has one row per family and model
    assert done.stdout.count("| det |") == len(FAMILIES)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA this would run the real suite")
def test_without_cuda_the_full_run_refuses_and_says_why(tmp_path) -> None:
    done = run_suite("--out", str(tmp_path / "suite.json"))
    assert done.returncode == 2
    assert "measures on a CUDA GPU" in done.stderr and "--smoke" in done.stderr
    assert not (tmp_path / "suite.json").exists()
