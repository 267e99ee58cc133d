"""Swin and MobileNetV3 train without host syncs: one forward, backward and optimizer step,
recorded op by op by tests/engine/test_sync_free.py's SyncRecorder (what would make a CUDA
host wait: a value or a data-dependent shape read back)."""

import pytest
import torch

from detcli.models.backbones import MobileNetV3, SwinTransformer
from tests.engine.test_sync_free import SyncRecorder


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, as tests/engine's: threads waiting on each other on a busy machine
    make a tiny step many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

@pytest.mark.parametrize("build", [
    # shifted windows with their mask, padding (30 x 38 input), stochastic depth, recomputation
    lambda: SwinTransformer(embed_dims=8, depths=[2, 2], num_heads=[1, 2], strides=[4, 2],
                            out_indices=[0, 1], window_size=3, drop_path_rate=0.3,
                            attn_drop_rate=0.1, with_cp=True, use_abs_pos_embed=True),
    lambda: MobileNetV3(arch="small", frozen_stages=1),
], ids=["swin", "mobilenet_v3_small"])
def test_train_step_has_no_host_sync(build):
    torch.manual_seed(0)
    model = build().train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                momentum=0.9)  # (AdamW reads its step counters on the host)
    x = torch.randn(2, 3, 30, 38)

    def step() -> None:
        loss = sum(o.square().mean() for o in model(x))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # the optimizer's state exists before the recorded step
    with SyncRecorder() as recorder:
        step()
    assert recorder.syncs == [], recorder.report()
