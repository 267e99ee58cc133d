"""``mmdet://NAME``: MMDetection 3.3's model zoo for the families det has.

The table (:mod:`detcli.zoo.mmdet_table`, written from MMDetection's metafiles) names each
entry's family, the det preset whose model it is (None: no preset yet; ``det config import``
the entry's MMDetection config), its download URL, the sha256 prefix in its file name (torch
hub's convention) and its COCO box / mask AP as MMDetection reports them.

Nothing is downloaded unless asked (:func:`fetch`, ``--init-from mmdet://NAME``): the file goes
into torch's hub cache (``$TORCH_HOME/hub/checkpoints``) and its sha256 must start with the
prefix, else it is deleted and the error says so. A cached file is used as it is (checked
once, when downloaded). Offline, the error names the file, the URL and the folder to put it in.
"""

from __future__ import annotations

import logging
import os
import urllib.error
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from detcli.errors import CheckpointError
from detcli.models.pretrained import hub_checkpoint_dir
from detcli.zoo.mmdet_table import ROWS

log = logging.getLogger(__name__)

PREFIX = "mmdet://"


@dataclass(frozen=True)
class ZooEntry:
    """One MMDetection model-zoo checkpoint."""

    name: str  # MMDetection's config name, e.g. retinanet_r50_fpn_1x_coco
    family: str  # det's family: retinanet, fcos, atss, faster_rcnn, mask_rcnn, ...
    preset: str | None  # the det preset whose model this is
    url: str
    sha256_prefix: str
    box_ap: float | None
    mask_ap: float | None

    @property
    def file_name(self) -> str:
        return os.path.basename(urlparse(self.url).path)

    def as_dict(self) -> dict:
        return {**asdict(self), "file_name": self.file_name}


ENTRIES: dict[str, ZooEntry] = {row[0]: ZooEntry(*row) for row in ROWS}


def entries(family: str | None = None) -> list[ZooEntry]:
    """The table's entries (of ``family`` only, when given), by name."""
    return [e for e in ENTRIES.values() if family is None or e.family == family]


def families() -> list[str]:
    return sorted({e.family for e in ENTRIES.values()})


def entry(name: str) -> ZooEntry:
    """The entry ``name`` (``mmdet://`` may lead it); CheckpointError naming close names."""
    name = name.removeprefix(PREFIX)
    if name in ENTRIES:
        return ENTRIES[name]
    stem = name.split("_")[0]
    close = [n for n in ENTRIES if n.startswith(stem)][:5]
    raise CheckpointError(f"{PREFIX}{name} is not in det's MMDetection zoo table"
                          + (f" (close: {', '.join(close)})" if close else ""),
                          hint="det zoo lists the entries")


def fetch(name: str, folder: Path | None = None) -> Path:
    """The cached file of entry ``name``, downloaded (and hash-checked) when not cached."""
    item = entry(name)
    folder = folder or hub_checkpoint_dir()
    target = folder / item.file_name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s to %s", item.url, folder)
    try:
        torch.hub.download_url_to_file(item.url, str(target), hash_prefix=item.sha256_prefix,
                                       progress=False)
    except RuntimeError as exc:  # torch's hash mismatch (the partial file is removed)
        target.unlink(missing_ok=True)
        raise CheckpointError(f"{item.file_name} from {item.url} does not have the sha256 "
                              f"prefix {item.sha256_prefix} ({exc}); it was deleted",
                              hint="download it again; a proxy may have changed it") from None
    except (urllib.error.URLError, OSError) as exc:
        target.unlink(missing_ok=True)
        raise CheckpointError(
            f"cannot download {PREFIX}{item.name} ({exc}): put {item.file_name} in the folder "
            f"{folder} (the torch hub cache, $TORCH_HOME/hub/checkpoints), or give the "
            "downloaded file's path instead",
            hint=f"on a machine with network access: curl -L -o {item.file_name} {item.url}",
        ) from None
    return target


def resolve(path: str) -> str:
    """``mmdet://NAME`` -> its cached (or downloaded) file's path; anything else unchanged."""
    return str(fetch(path)) if path.startswith(PREFIX) else path
