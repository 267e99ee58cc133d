"""Loading pretrained weights into a module: ``init_cfg = {type = "Pretrained", checkpoint = ...}``.

A checkpoint is named by one of
  * a local file path (``/data/resnet50-0676ba61.pth``);
  * ``torchvision://NAME`` (``torchvision://resnet50``): the ImageNet weights torchvision's
    weights API lists for NAME (``IMAGENET1K_V1``, the weights MMDetection's configs were tuned
    on), kept in torch's hub cache (``$TORCH_HOME/hub/checkpoints``);
  * an ``http(s)://`` URL, cached the same way;
  * ``open-mmlab://NAME`` for the MMCV model-zoo names MMDetection's configs use that det knows
    (``OPEN_MMLAB``: the caffe-style ResNets of the FCOS configs, Detectron's and Detectron2's,
    the ResNeXt-101 and RegNetX-3.2GF ImageNet weights), read from the URL MMCV maps them to. Other ``open-mmlab://`` names are an error that says what to do instead.
A cached file is read without touching the network. A file that is not cached is downloaded
by :func:`detcli.zoo.download.download`, the one download path ``mmdet://NAME`` uses too:
resumable (``FILE.partial``, HTTP ``Range``) and, when the file name carries a sha256 prefix
(torch hub's convention, ``resnet50-0676ba61.pth``: every torchvision and MMCV file), kept only
when its sha256 starts with it. When the download fails (no network), the error names the
file, the folder to put it in, and that ``checkpoint`` may name the downloaded file's path
instead.

Shapes: every tensor is a whole parameter or buffer; checkpoint and module tensors are matched
by state-dict key and must have equal shapes.

Keys are matched by name. Keys the module has but the file lacks, and keys the file has but
the module lacks (a classifier's ``fc.*``), are logged; a key whose shape differs is an error.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from detcli.config.schema import Schema
from detcli.errors import CheckpointError
from detcli.zoo.download import download

log = logging.getLogger(__name__)

TORCHVISION_PREFIX = "torchvision://"
OPEN_MMLAB_PREFIX = "open-mmlab://"
# torch hub's file-name convention NAME-HASH.EXT (its check_hash reads it the same way); 8+ hex
# digits, so that a name such as resnet-50.pth is not taken for one with hash "50"
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.")
# MMCV's open_mmlab.json entries det resolves (MSRA's caffe-style ResNets, BGR input: Detectron's,
# and Detectron2's, which the FCOS-DCN and other 3.x configs use with Detectron2's mean)
OPEN_MMLAB = {
    "detectron/resnet50_caffe":
        "https://download.openmmlab.com/pretrain/third_party/resnet50_caffe-788b5fa3.pth",
    "detectron/resnet101_caffe":
        "https://download.openmmlab.com/pretrain/third_party/resnet101_caffe-3ad79236.pth",
    "detectron2/resnet50_caffe":
        "https://download.openmmlab.com/pretrain/third_party/resnet50_msra-5891d200.pth",
    "detectron2/resnet101_caffe":
        "https://download.openmmlab.com/pretrain/third_party/resnet101_msra-6cc46731.pth",
    # the ResNeXt and RegNet configs' ImageNet weights, already in det's (MMDetection's) layout
    "resnext101_32x4d":
        "https://download.openmmlab.com/pretrain/third_party/resnext101_32x4d-a5af3160.pth",
    "resnext101_64x4d":
        "https://download.openmmlab.com/pretrain/third_party/resnext101_64x4d-ee2c6f71.pth",
    "regnetx_3.2gf":
        "https://download.openmmlab.com/pretrain/third_party/regnetx_3.2gf-c2599b0f.pth",
}


class PretrainedInit(Schema):
    """Initialise a module from a checkpoint (path, ``torchvision://NAME`` or URL)."""

    type: Literal["Pretrained"] = "Pretrained"
    checkpoint: str


def hub_checkpoint_dir() -> Path:
    """Where torch's hub keeps downloaded checkpoints (honours ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_url(name: str) -> str:
    """The download URL of torchvision's ImageNet weights for model ``name`` (e.g. resnet50)."""
    from torchvision.models import get_model_weights

    try:
        weights_enum = get_model_weights(name)
    except ValueError as exc:
        raise CheckpointError(
            f"torchvision has no model {name!r} for checkpoint {TORCHVISION_PREFIX}{name}",
            hint="use a torchvision model name such as resnet50, or a local file path",
        ) from exc
    weights = getattr(weights_enum, "IMAGENET1K_V1", None) or weights_enum.DEFAULT
    return weights.url


def _read_file(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a bad file
        raise CheckpointError(
            f"checkpoint file {str(path)!r} cannot be read: {exc}",
            hint="the file may be truncated; delete it and download it again",
        ) from exc


def hash_prefix_of(file_name: str) -> str:
    """The sha256 prefix ``file_name`` carries (``resnet50-0676ba61.pth`` -> ``0676ba61``), or
    ``""`` when it carries none (then a download is not hash-checked)."""
    found = HASH_IN_NAME.search(file_name)
    return found.group(1) if found else ""


def _read_url(url: str) -> dict[str, Tensor]:
    """The state of the file at ``url``: the hub cache's copy, downloaded there when missing."""
    file_name = os.path.basename(urlparse(url).path)
    cached = hub_checkpoint_dir() / file_name
    if not cached.is_file():
        download(url, cached, hash_prefix_of(file_name),
                 instead="set the config's init_cfg.checkpoint to the downloaded file's path")
    return _read_file(cached)


def open_mmlab_url(name: str) -> str:
    """The download URL of MMCV model-zoo name ``name`` (``detectron/resnet50_caffe``)."""
    if name not in OPEN_MMLAB:
        raise CheckpointError(
            f"checkpoint {OPEN_MMLAB_PREFIX}{name} is an MMCV model-zoo name det does not know "
            f"(it knows {', '.join(sorted(OPEN_MMLAB))}); download the file MMCV's "
            "open_mmlab.json lists for it and set init_cfg.checkpoint to the file's path",
            hint="MMCV's list: mmcv/model_zoo/open_mmlab.json")
    return OPEN_MMLAB[name]


def read_checkpoint(checkpoint: str) -> dict[str, Tensor]:
    """The state dict a checkpoint name refers to (see the module docstring for the forms)."""
    if checkpoint.startswith(TORCHVISION_PREFIX):
        state = _read_url(torchvision_url(checkpoint[len(TORCHVISION_PREFIX):]))
    elif checkpoint.startswith(OPEN_MMLAB_PREFIX):
        state = _read_url(open_mmlab_url(checkpoint[len(OPEN_MMLAB_PREFIX):]))
    elif checkpoint.startswith(("http://", "https://")):
        state = _read_url(checkpoint)
    else:
        state = _read_file(Path(checkpoint).expanduser())
    for wrapper_key in ("state_dict", "model"):  # MMDetection / detectron-style wrappers
        if isinstance(state, dict) and isinstance(state.get(wrapper_key), dict):
            state = state[wrapper_key]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {checkpoint!r} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state(module: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Copy matching tensors of ``state`` into ``module``; log missing and unexpected keys."""
    own = module.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"checkpoint {source!r}: {key} has shape {tuple(value.shape)} but the model's "
                f"{key} has shape {tuple(own[key].shape)}",
                hint="check the depth/base_channels of the model against the checkpoint",
            )
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys:
        log.warning("checkpoint %s lacks %d keys of %s: %s", source, len(result.missing_keys),
                    type(module).__name__, ", ".join(result.missing_keys))
    if result.unexpected_keys:
        log.info("checkpoint %s has %d keys %s does not use: %s", source,
                 len(result.unexpected_keys), type(module).__name__,
                 ", ".join(result.unexpected_keys))


def load_pretrained(module: nn.Module, init_cfg: PretrainedInit) -> None:
    """Load ``init_cfg.checkpoint`` into ``module`` (no prefix stripping beyond ``module.``)."""
    state = read_checkpoint(init_cfg.checkpoint)
    load_state(module, state, init_cfg.checkpoint)
    log.info("loaded %s into %s", init_cfg.checkpoint, type(module).__name__)
