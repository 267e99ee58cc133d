"""Hand-written ``metrics.jsonl`` files for the training-log tests (analysis, viz, CLI).

RUN_A: 3 epochs of 4 iterations, a record every 2 iterations and an evaluation per epoch::

    iter   2     4     6     8     10    12
    loss   1.5   1.2   1.0   0.9   0.8   0.7    (loss_cls + loss_bbox)
    time   0.5   0.25  0.25  0.25  0.25  0.25   s/iter -> 2 * 0.5 + 10 * 0.25 = 3.5 s
    bbox_mAP at iters 4, 8, 12: 0.1, 0.3, 0.25  -> best 0.3 (epoch 2), final 0.25 (epoch 3)

RUN_B: the same schedule, stopped after epoch 2, clipping (grad_norm), evaluations 0.2, 0.4.
"""

from __future__ import annotations

import json
from pathlib import Path

IPE, MAX_ITERS = 4, 12


def train(it: int, cls: float, bbox: float, *, lr: float = 0.01, time: float = 0.25,
          **extra: float) -> dict:
    return {"mode": "train", "epoch": (it - 1) // IPE + 1, "iter": it,
            "inner_iter": (it - 1) % IPE + 1, "iters_per_epoch": IPE, "max_iters": MAX_ITERS,
            "lr": lr, "loss_cls": cls, "loss_bbox": bbox, "loss": round(cls + bbox, 6),
            "time": time, "data_time": 0.01, "img_per_s": 16.0, "memory": 300.0,
            "eta_s": 1.0, **extra}


def val(it: int, mAP: float) -> dict:
    return {"mode": "val", "epoch": it // IPE, "iter": it, "bbox_mAP": mAP,
            "bbox_mAP_50": round(mAP + 0.3, 6), "bbox_mAP_75": round(mAP / 2, 6)}


RUN_A = [train(2, 1.0, 0.5, lr=0.002, time=0.5), train(4, 0.8, 0.4, lr=0.004), val(4, 0.1),
         train(6, 0.6, 0.4), train(8, 0.5, 0.4), val(8, 0.3),
         train(10, 0.5, 0.3, lr=0.001), train(12, 0.4, 0.3, lr=0.001), val(12, 0.25)]
RUN_B = [train(2, 1.2, 0.6, grad_norm=5.0), train(4, 1.0, 0.5, grad_norm=4.0), val(4, 0.2),
         train(6, 0.9, 0.5, grad_norm=3.0), train(8, 0.8, 0.4, grad_norm=2.5), val(8, 0.4)]


def write_run(work_dir: Path, records: list[dict], config: str | None = None,
              tail: str = "") -> Path:
    """``work_dir/metrics.jsonl`` with ``records`` (one JSON line each) and ``tail`` after
    them; ``config`` as its ``config.toml``."""
    work_dir.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (work_dir / "metrics.jsonl").write_text(lines + tail, encoding="utf-8")
    if config is not None:
        (work_dir / "config.toml").write_text(config, encoding="utf-8")
    return work_dir
