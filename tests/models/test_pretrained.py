"""Pretrained checkpoints: local torchvision files, the hub cache, and the offline error."""

import hashlib
import io
import logging
import os
import urllib.error
import urllib.request

import pytest
import torch
import torchvision

from detcli.errors import CheckpointError
from detcli.models import pretrained
from detcli.models.backbones import ResNet, ResNetConfig
from detcli.models.pretrained import (
    OPEN_MMLAB,
    PretrainedInit,
    hash_prefix_of,
    hub_checkpoint_dir,
    torchvision_url,
)
from detcli.registry import BACKBONES
from tests.zoo.test_download import Behaviour, serve

TV_FILE = "resnet50-0676ba61.pth"  # torchvision's ResNet50_Weights.IMAGENET1K_V1


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """A TORCH_HOME with an empty hub cache, and a network that fails like offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(request, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvision_resnet50_file_loads_every_weight(tmp_path, caplog):
    tv_state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / TV_FILE
    torch.save(tv_state, path)
    cfg = ResNetConfig(depth=50, init_cfg={"type": "Pretrained", "checkpoint": str(path)})
    model = BACKBONES.build(cfg)
    with caplog.at_level(logging.INFO, logger="detcli.models.pretrained"):
        model.init_weights()
    ours = model.state_dict()
    assert all(torch.equal(ours[k], tv_state[k]) for k in ours)
    assert torch.equal(ours["layer3.5.bn3.weight"], tv_state["layer3.5.bn3.weight"])
    assert "fc.weight, fc.bias" in caplog.text  # reported as unused
    assert "lacks" not in caplog.text  # nothing missing


def test_missing_keys_are_logged_and_wrappers_unwrapped(tmp_path, caplog):
    model = ResNet(depth=18, base_channels=8)
    state = {f"module.{k}": v for k, v in ResNet(depth=18, base_channels=8).state_dict().items()
             if not k.startswith("layer4.")}
    torch.save({"state_dict": state, "meta": {"epoch": 3}}, tmp_path / "ckpt.pth")
    model.init_cfg = PretrainedInit(checkpoint=str(tmp_path / "ckpt.pth"))
    with caplog.at_level(logging.WARNING, logger="detcli.models.pretrained"):
        model.init_weights()
    assert "layer4.0.conv1.weight" in caplog.text
    assert torch.equal(model.conv1.weight, state["module.conv1.weight"])


def test_shape_mismatch_names_the_key_and_both_shapes(tmp_path):
    state = ResNet(depth=18, base_channels=8).state_dict()
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    model = ResNet(depth=18, base_channels=8, init_cfg=PretrainedInit(checkpoint=str(tmp_path / "bad.pth")))
    with pytest.raises(CheckpointError, match=r"conv1.weight has shape \(8, 3, 3, 3\) but the model's "
                                              r"conv1.weight has shape \(8, 3, 7, 7\)"):
        model.init_weights()


def test_missing_and_corrupt_files_are_checkpoint_errors(tmp_path):
    model = ResNet(depth=18, base_channels=8, init_cfg=PretrainedInit(checkpoint=str(tmp_path / "no.pth")))
    with pytest.raises(CheckpointError, match="no.pth' does not exist"):
        model.init_weights()
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    model.init_cfg = PretrainedInit(checkpoint=str(tmp_path / "junk.pth"))
    with pytest.raises(CheckpointError, match="cannot be read"):
        model.init_weights()


def test_torchvision_url_resolves_through_the_weights_api():
    assert torchvision_url("resnet50") == f"https://download.pytorch.org/models/{TV_FILE}"
    with pytest.raises(CheckpointError, match="torchvision has no model 'resnet51'"):
        torchvision_url("resnet51")


def test_offline_without_cache_names_the_file_and_the_folder(empty_torch_home):
    model = ResNet(depth=50, base_channels=8, init_cfg=PretrainedInit(checkpoint="torchvision://resnet50"))
    with pytest.raises(CheckpointError) as info:
        model.init_weights()
    message = str(info.value)
    assert TV_FILE in message
    assert f"put {TV_FILE} in the folder {empty_torch_home}" in message


def test_cached_file_loads_without_network(empty_torch_home):
    source = ResNet(depth=50, base_channels=8)
    empty_torch_home.mkdir(parents=True)
    torch.save(source.state_dict(), empty_torch_home / TV_FILE)
    model = ResNet(depth=50, base_channels=8, init_cfg=PretrainedInit(checkpoint="torchvision://resnet50"))
    model.init_weights()  # the download function raises: reaching it would fail the test
    assert torch.equal(model.layer2[1].conv2.weight, source.layer2[1].conv2.weight)


# downloads: the same resumable, hash-checked path as mmdet:// (detcli.zoo.download), served by
# a local http.server (tests/zoo/test_download.py's) with a real state dict


def saved_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture
def weights_server(tmp_path, monkeypatch):
    """(behaviour, base URL, hub cache): a small ResNet-18's state served on 127.0.0.1 under
    any path; TORCH_HOME is a temporary folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    source = ResNet(depth=18, base_channels=8)
    behaviour = Behaviour(payload=saved_bytes(source.state_dict()))
    server = serve(behaviour)
    yield source, behaviour, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_hash_prefixes_are_read_from_torch_hubs_file_names():
    assert hash_prefix_of(TV_FILE) == "0676ba61"
    assert hash_prefix_of(os.path.basename(torchvision_url("resnet50"))) == "0676ba61"
    assert hash_prefix_of("resnet50_caffe-788b5fa3.pth") == "788b5fa3"
    assert hash_prefix_of("weights.pth") == "" and hash_prefix_of("resnet-50.pth") == ""
    assert all(len(hash_prefix_of(os.path.basename(u))) == 8 for u in OPEN_MMLAB.values())


def test_an_interrupted_backbone_download_resumes_and_is_hash_checked(weights_server):
    source, behaviour, base = weights_server
    prefix = hashlib.sha256(behaviour.payload).hexdigest()[:8]
    url = f"{base}/tiny18-{prefix}.pth"
    behaviour.cut_after = 3000
    model = ResNet(depth=18, base_channels=8, init_cfg=PretrainedInit(checkpoint=url))
    with pytest.raises(CheckpointError, match=f"stopped after 3000 of {len(behaviour.payload)} "
                                              "bytes"):
        model.init_weights()
    model.init_weights()  # the second call asks for the rest only
    assert behaviour.ranges == [None, "bytes=3000-"]
    cached = hub_checkpoint_dir() / f"tiny18-{prefix}.pth"
    assert cached.read_bytes() == behaviour.payload
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())
    model.init_weights()  # cached: no third request
    assert len(behaviour.ranges) == 2


def test_a_backbone_file_whose_bytes_miss_its_names_hash_is_deleted(weights_server):
    _, _, base = weights_server
    model = ResNet(depth=18, base_channels=8,
                   init_cfg=PretrainedInit(checkpoint=f"{base}/tiny18-deadbeef.pth"))
    with pytest.raises(CheckpointError, match="not the expected prefix deadbeef; the download "
                                              "was deleted"):
        model.init_weights()
    assert list(hub_checkpoint_dir().iterdir()) == []  # neither the file nor its partial


def test_torchvision_names_and_unhashed_urls_download_through_the_same_path(weights_server,
                                                                           monkeypatch):
    source, behaviour, base = weights_server
    prefix = hashlib.sha256(behaviour.payload).hexdigest()[:8]
    monkeypatch.setattr(pretrained, "torchvision_url", lambda name: f"{base}/{name}-{prefix}.pth")
    model = ResNet(depth=18, base_channels=8,
                   init_cfg=PretrainedInit(checkpoint="torchvision://resnet18"))
    model.init_weights()
    assert (hub_checkpoint_dir() / f"resnet18-{prefix}.pth").is_file()
    model.init_cfg = PretrainedInit(checkpoint=f"{base}/weights.pth")  # no hash to check
    model.init_weights()
    assert (hub_checkpoint_dir() / "weights.pth").read_bytes() == behaviour.payload
    assert torch.equal(model.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert len(behaviour.ranges) == 2
