"""A resumable, hash-checked download into a folder: what every checkpoint det downloads goes
through (``mmdet://NAME``'s files, and the backbones' ``torchvision://NAME``, ``open-mmlab://NAME``
and URL weights of :mod:`detcli.models.pretrained`).

:func:`download` writes ``URL`` to ``folder/FILE.partial``. A partial file left by an earlier,
interrupted call is resumed with an HTTP ``Range: bytes=N-`` request (a server that answers
200 instead of 206 sends the whole file again, and the partial starts over). Once the server
has sent everything, the partial's sha256 must start with the expected prefix: then it is
renamed to ``FILE`` (``os.replace``: the final name never holds a half-written file); else the
partial is deleted and the error says so (an empty prefix, for a file whose name carries no
hash, accepts any bytes). An interruption keeps the partial and says how much
of it arrived, so the next call continues; a server that cannot be reached is a
:class:`~detcli.errors.CheckpointError` naming the URL, the file to place and the folder.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

from detcli.errors import CheckpointError

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes read and written at a time
TIMEOUT_S = 30.0  # for connecting and for each read


def partial_path(target: Path) -> Path:
    """Where the download of ``target`` collects its bytes until they are verified."""
    return target.with_name(target.name + ".partial")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


GIVE_PATH = "give the downloaded file's path instead"  # the offline error's alternative


def _offline_error(url: str, target: Path, reason: object, instead: str) -> CheckpointError:
    return CheckpointError(
        f"cannot download {url} ({reason}): put {target.name} in the folder {target.parent} "
        f"(the torch hub cache, $TORCH_HOME/hub/checkpoints), or {instead}",
        hint=f"on a machine with network access: curl -L -o {target.name} {url}")


def _total_size(response: http.client.HTTPResponse, start: int) -> int | None:
    """The whole file's size in bytes, from a 206's Content-Range or a 200's Content-Length."""
    if response.status == 206:
        span = response.headers.get("Content-Range", "")  # "bytes 100-999/1000"
        total = span.rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) + start if length and length.isdigit() else None


def _receive(url: str, partial: Path) -> None:
    """Append the bytes of ``url`` the partial file lacks; CheckpointError when cut off."""
    start = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing after byte `start`: the partial is complete
            return
        raise
    with response:
        if start and response.status != 206:  # the server ignored the range: start over
            log.info("%s does not resume downloads; downloading it from the start", url)
            start = 0
        total = _total_size(response, start)
        received = start
        with open(partial, "ab" if start else "wb") as f:
            try:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    received += len(block)
            except (http.client.IncompleteRead, OSError) as exc:
                cut = exc
            else:
                cut = None
    if cut is not None or (total is not None and received < total):
        raise CheckpointError(
            f"the download of {url} stopped after {received} of "
            f"{total if total is not None else '?'} bytes ({cut or 'the connection closed'}); "
            f"the bytes so far are kept in {partial}",
            hint="run the command again to resume it")


def download(url: str, target: Path, sha256_prefix: str, *, instead: str = GIVE_PATH) -> Path:
    """``url`` saved as ``target`` once its sha256 starts with ``sha256_prefix``; see the
    module docstring for resuming, verification and the errors. ``instead`` ends the offline
    error: what else the user can do with a file downloaded elsewhere."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    resumed = partial.stat().st_size if partial.is_file() else 0
    log.info("downloading %s to %s%s", url, target.parent,
             f" (resuming after {resumed} bytes)" if resumed else "")
    try:
        _receive(url, partial)
    except urllib.error.HTTPError as exc:
        raise _offline_error(url, target, f"HTTP {exc.code} {exc.reason}", instead) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _offline_error(url, target, getattr(exc, "reason", exc), instead) from None
    digest = sha256_of(partial)
    if not digest.startswith(sha256_prefix):
        partial.unlink()
        raise CheckpointError(
            f"{target.name} downloaded from {url} has sha256 {digest[:len(sha256_prefix)]}..., "
            f"not the expected prefix {sha256_prefix}; the download was deleted",
            hint="run the command again to download it anew; if it fails again, a proxy may be "
                 "changing the file: download it yourself and give its path")
    os.replace(partial, target)
    return target
