"""Write tests/engine/fixtures/mmdet_exp_momentum_ema.pt: MMDetection 3.3's ExpMomentumEMA
(update_buffers = True, as RTMDet's EMAHook) over a small network whose weights change before
each of 6 updates; det's ModelEMA must give the same averages bit for bit
(tests/engine/test_ema_buffers.py).

    /work/mmref/bin/python tools/mmdet_ema_fixture.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "shared" / "mmdet_reference"))
import mmcv_ext_shim  # noqa: E402

mmcv_ext_shim.install()

import torch  # noqa: E402
from mmdet.models.layers import ExpMomentumEMA  # noqa: E402
from torch import nn  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests/engine/fixtures/mmdet_exp_momentum_ema.pt"


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))


def main() -> None:
    model = network()
    ema = ExpMomentumEMA(model, momentum=0.0002, gamma=4, update_buffers=True)
    states = []  # the model's weights before each update
    for step in range(6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model[1].running_mean.add_(torch.randn(3))
            model[1].num_batches_tracked.add_(1)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        ema.update_parameters(model)
    averaged = {k: v.clone() for k, v in ema.module.state_dict().items()}
    torch.save({"states": states, "averaged": averaged, "momentum": 0.0002, "gamma": 4}, OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
