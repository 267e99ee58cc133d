"""Write tests/engine/fixtures/mmengine_flat_cosine_lr.json: the lr MMEngine sets before each
iteration under RTMDet's param_scheduler (LinearLR by iteration, then CosineAnnealingLR by
epoch converted to iterations), on a small run.

Run with MMDetection 3.3's environment: /work/mmref/bin/python tools/mmengine_lr_fixture.py
"""

import json
from pathlib import Path

import torch
from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR

OUT = Path(__file__).resolve().parents[1] / "tests/engine/fixtures/mmengine_flat_cosine_lr.json"
BASE_LR, MAX_EPOCHS, EPOCH_LENGTH, WARMUP_END = 0.004, 6, 5, 7


def main() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=BASE_LR, weight_decay=0.05)
    schedulers = [
        LinearLR(optimizer, start_factor=1.0e-5, by_epoch=False, begin=0, end=WARMUP_END),
        CosineAnnealingLR.build_iter_from_epoch(
            optimizer, eta_min=BASE_LR * 0.05, begin=MAX_EPOCHS // 2, end=MAX_EPOCHS,
            T_max=MAX_EPOCHS // 2, epoch_length=EPOCH_LENGTH),
    ]
    lrs = []
    for _ in range(MAX_EPOCHS * EPOCH_LENGTH):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    OUT.write_text(json.dumps({"base_lr": BASE_LR, "max_epochs": MAX_EPOCHS,
                               "epoch_length": EPOCH_LENGTH, "warmup_end": WARMUP_END,
                               "start_factor": 1.0e-5, "eta_min_ratio": 0.05, "lr": lrs},
                              indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
