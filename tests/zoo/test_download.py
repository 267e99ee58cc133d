"""The zoo's downloads, without the network: a file served by an http.server thread on
127.0.0.1 that honours ``Range`` (or not), cut off after N bytes, resumed, verified against the
sha256 prefix; a wrong hash deletes the partial; an unreachable host names the URL, the file
and the folder."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import detcli.zoo.mmdet as zoo
from detcli.errors import CheckpointError
from detcli.zoo.download import download, partial_path

PAYLOAD = bytes(range(256)) * 64  # 16 KiB
PREFIX = hashlib.sha256(PAYLOAD).hexdigest()[:8]


@dataclass
class Behaviour:
    cut_after: int | None = None  # close the connection after this many body bytes, once
    honour_range: bool = True
    ranges: list[str | None] = field(default_factory=list)  # the Range header of each request
    payload: bytes = PAYLOAD  # the file served, whatever the path


def serve(behaviour: Behaviour):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            asked = self.headers.get("Range")
            behaviour.ranges.append(asked)
            payload = behaviour.payload
            start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
            if not behaviour.honour_range:
                start = 0
            if start >= len(payload):  # nothing after byte `start`
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(payload)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = payload[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range",
                                 f"bytes {start}-{len(payload) - 1}/{len(payload)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if behaviour.cut_after is not None:
                body, behaviour.cut_after = body[:behaviour.cut_after], None
                self.close_connection = True
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    return server


@pytest.fixture
def server():
    started = []

    def start(behaviour: Behaviour) -> str:
        started.append(serve(behaviour))
        return f"http://127.0.0.1:{started[-1].server_address[1]}/model-{PREFIX}.pth"

    yield start
    for s in started:
        s.shutdown()
        s.server_close()


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    behaviour = Behaviour(cut_after=5000)
    url = server(behaviour)
    target = tmp_path / "checkpoints" / f"model-{PREFIX}.pth"
    with pytest.raises(CheckpointError, match=f"stopped after 5000 of {len(PAYLOAD)} bytes"
                                              r".*kept in .*\.partial") as caught:
        download(url, target, PREFIX)
    assert caught.value.hint == "run the command again to resume it"
    assert partial_path(target).read_bytes() == PAYLOAD[:5000] and not target.exists()
    assert download(url, target, PREFIX) == target
    assert behaviour.ranges == [None, "bytes=5000-"]
    assert target.read_bytes() == PAYLOAD and not partial_path(target).exists()


def test_a_server_that_ignores_the_range_sends_the_file_again(server, tmp_path):
    behaviour = Behaviour(honour_range=False)
    url = server(behaviour)
    target = tmp_path / f"model-{PREFIX}.pth"
    partial_path(target).write_bytes(PAYLOAD[:777])
    download(url, target, PREFIX)
    assert behaviour.ranges == ["bytes=777-"]
    assert target.read_bytes() == PAYLOAD  # not the 777 bytes twice


def test_a_complete_partial_is_verified_without_more_bytes(server, tmp_path):
    target = tmp_path / f"model-{PREFIX}.pth"
    partial_path(target).write_bytes(PAYLOAD)  # the process died between the last byte and rename
    behaviour = Behaviour()
    url = server(behaviour)
    download(url, target, PREFIX)  # the server answers 416 to bytes=16384-
    assert behaviour.ranges == [f"bytes={len(PAYLOAD)}-"]
    assert target.read_bytes() == PAYLOAD


def test_a_wrong_hash_deletes_the_partial_and_says_so(server, tmp_path):
    url = server(Behaviour())
    target = tmp_path / "model-deadbeef.pth"
    with pytest.raises(CheckpointError, match=f"has sha256 {PREFIX}..., not the expected prefix "
                                              "deadbeef; the download was deleted"):
        download(url, target, "deadbeef")
    assert not target.exists() and not partial_path(target).exists()


def test_an_unreachable_host_names_the_url_the_file_and_the_folder(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model-{PREFIX}.pth"
    target = tmp_path / "hub" / "checkpoints" / f"model-{PREFIX}.pth"
    with pytest.raises(CheckpointError) as caught:
        download(url, target, PREFIX)
    message = str(caught.value)
    assert f"cannot download {url}" in message
    assert f"put model-{PREFIX}.pth in the folder {target.parent}" in message
    assert url in caught.value.hint


def test_mmdet_names_download_into_the_hub_cache_once(server, tmp_path, monkeypatch):
    behaviour = Behaviour()
    url = server(behaviour)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    item = zoo.ZooEntry("fake_r50_coco", "retinanet", None, url, PREFIX, 1.0, None)
    monkeypatch.setitem(zoo.ENTRIES, item.name, item)
    path = zoo.checkpoint_file("mmdet://fake_r50_coco")
    assert path == Path(tmp_path) / "hub" / "checkpoints" / f"model-{PREFIX}.pth"
    assert path.read_bytes() == PAYLOAD
    assert zoo.checkpoint_file("mmdet://fake_r50_coco") == path  # cached: no second request
    assert len(behaviour.ranges) == 1
    assert zoo.checkpoint_file(str(path)) == path  # a path stays a path


def test_which_entry_a_checkpoint_is():
    r50 = zoo.entry("retinanet_r50_fpn_1x_coco")
    assert zoo.entry_of_checkpoint("mmdet://retinanet_r50_fpn_1x_coco", {}) is r50
    assert zoo.entry_of_checkpoint(f"/downloads/{r50.file_name}", {}) is r50
    run = {"experiment_name": "retinanet_r50_fpn_1x_coco_20230511_093012"}  # MMEngine's Runner
    assert zoo.entry_of_checkpoint("epoch_12.pth", run) is r50
    assert zoo.entry_of_checkpoint("epoch_12.pth", {"experiment_name": r50.name}) is None
    assert zoo.entry_of_checkpoint("epoch_12.pth", {"experiment_name": "mine_20230511_093012"}) \
        is None
