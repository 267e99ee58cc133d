"""``open-mmlab://`` checkpoints (the FCOS preset's caffe-style ResNet): resolved to MMCV's URL,
read from the hub cache, and explained when they cannot be had."""

import pytest
import torch

from detcli.errors import CheckpointError
from detcli.models.backbones import ResNet
from detcli.models.pretrained import PretrainedInit, open_mmlab_url
from tests.models.test_pretrained import empty_torch_home  # noqa: F401  (fixture)

CAFFE_FILE = "resnet50_caffe-788b5fa3.pth"
CAFFE = "open-mmlab://detectron/resnet50_caffe"


def caffe_resnet(checkpoint: str | None = None) -> ResNet:
    init = PretrainedInit(checkpoint=checkpoint) if checkpoint else None
    return ResNet(depth=50, base_channels=8, style="caffe", init_cfg=init)


def test_known_names_map_to_mmcvs_urls_and_others_say_what_to_do():
    assert open_mmlab_url("detectron/resnet50_caffe").endswith("/third_party/" + CAFFE_FILE)
    # fcos_r50_dcn's (MMCV's open_mmlab.json: Detectron2's MSRA weights)
    assert open_mmlab_url("detectron2/resnet50_caffe").endswith(
        "/third_party/resnet50_msra-5891d200.pth")
    with pytest.raises(CheckpointError) as info:
        caffe_resnet("open-mmlab://contrib/resnet50_gn").init_weights()
    message = str(info.value)
    assert "open-mmlab://contrib/resnet50_gn is an MMCV model-zoo name det does not know" \
        in message
    assert "set init_cfg.checkpoint to the file's path" in message


def test_offline_names_the_file_the_folder_and_the_path_alternative(empty_torch_home):
    with pytest.raises(CheckpointError) as info:
        caffe_resnet(CAFFE).init_weights()
    message = str(info.value)
    assert f"put {CAFFE_FILE} in the folder {empty_torch_home}" in message
    assert "or set the config's init_cfg.checkpoint to the downloaded file's path" in message
    assert "https://download.openmmlab.com/pretrain/third_party/" + CAFFE_FILE in info.value.hint


def test_a_cached_mmcv_file_loads_through_its_state_dict_wrapper(empty_torch_home):
    source = caffe_resnet()
    empty_torch_home.mkdir(parents=True)
    torch.save({"state_dict": source.state_dict(), "meta": {}}, empty_torch_home / CAFFE_FILE)
    model = caffe_resnet(CAFFE)
    model.init_weights()  # the download function raises: reaching it would fail the test
    assert torch.equal(model.layer3[2].conv1.weight, source.layer3[2].conv1.weight)
