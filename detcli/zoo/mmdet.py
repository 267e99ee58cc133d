"""``mmdet://NAME``: MMDetection 3.3's model zoo for the families det has.

The table (:mod:`detcli.zoo.mmdet_table`, written from MMDetection's metafiles) names each
entry's family, the det preset whose model it is (None: no preset yet; ``det config import``
the entry's MMDetection config), its download URL, the sha256 prefix in its file name (torch
hub's convention) and its COCO box / mask AP as MMDetection reports them.

Nothing is downloaded unless asked: wherever det reads a trained model (``--init-from``,
``det test``, ``det predict``, ``det export onnx``, ``Detector.from_checkpoint``) the name goes
through :func:`checkpoint_file`, which fetches the entry's file into torch's hub cache
(``$TORCH_HOME/hub/checkpoints``) once: resumable, and kept only when its sha256 starts with
the prefix (:mod:`detcli.zoo.download`). A cached file is used as it is (checked once, when
downloaded). Offline, the error names the file, the URL and the folder to put it in.
:func:`entry_of_checkpoint` tells which entry a file is, so its det preset can stand in for a
config (``det predict mmdet://NAME INPUT...``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from detcli.errors import CheckpointError
from detcli.models.pretrained import hub_checkpoint_dir
from detcli.zoo.download import download
from detcli.zoo.mmdet_table import ROWS

PREFIX = "mmdet://"
RUN_NAME = re.compile(r"(?P<config>.+)_\d{8}_\d{6}")  # MMEngine's experiment_name


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
    """The cached file of entry ``name``, downloaded when not cached: resumable and checked
    against the entry's sha256 prefix (:func:`detcli.zoo.download.download`)."""
    item = entry(name)
    target = (folder or hub_checkpoint_dir()) / item.file_name
    if target.is_file():
        return target
    return download(item.url, target, item.sha256_prefix)


def checkpoint_file(checkpoint: str | os.PathLike) -> Path:
    """The local file a checkpoint name means: ``mmdet://NAME``'s cached (else downloaded) file,
    or the path as given. Every command that reads a trained model resolves names here."""
    text = os.fspath(checkpoint)
    return fetch(text) if text.startswith(PREFIX) else Path(text).expanduser()


def entry_of_checkpoint(checkpoint: str | os.PathLike,
                        meta: Mapping[str, Any]) -> ZooEntry | None:
    """The table's entry a checkpoint is, when it is one: ``mmdet://NAME``, a file named as the
    entry's download, or a file whose ``meta.experiment_name`` is an entry's name and the run's
    start (MMEngine's Runner writes ``{config name}_{YYYYMMDD_HHMMSS}`` there)."""
    text = os.fspath(checkpoint)
    if text.startswith(PREFIX):
        return entry(text)
    by_file = {e.file_name: e for e in ENTRIES.values()}
    name = Path(text).name
    if name in by_file:
        return by_file[name]
    experiment = meta.get("experiment_name")
    found = RUN_NAME.fullmatch(experiment) if isinstance(experiment, str) else None
    return ENTRIES.get(found["config"]) if found else None
