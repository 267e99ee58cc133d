"""OS faults while training writes: one message naming the path and the cause, exit code 5, no
traceback, and nothing already written lost.

Tests run as root here, where permission bits do not stop a write; so the faults are the ones
root meets too: a work dir under a regular file, and a full disk (ENOSPC) or a read-only file
system (EROFS) raised by the write itself.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from detcli.cli.main import app
from detcli.data.synth import make_synthetic_dataset
from detcli.engine.checkpoint import read_checkpoint
from detcli.engine.hooks.logger import LoggerHook
from detcli.engine.work_dir import attach_log_file, detach_log_file
from detcli.errors import StorageError
from tests.engine.conftest import tiny_config_text


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("storage")
    synth = make_synthetic_dataset(root / "synth", num_train=8, num_val=4, image_size=96, seed=1)
    path = root / "tiny.toml"
    path.write_text(tiny_config_text(synth))
    return path


@pytest.fixture
def run():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda *args: CliRunner().invoke(app, [str(a) for a in args])
    torch.set_num_threads(threads)


def one_message(result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert f"error: {message}" in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_a_work_dir_under_a_regular_file(run, config, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a file\n")
    result = run("train", config, "--work-dir", notes / "run", "--device", "cpu")
    one_message(result, 5, f"cannot write to the work directory {notes / 'run'}: {notes} is a "
                           "file, not a folder")
    assert "hint: move that file away, or choose another path" in result.output
    assert notes.read_text() == "a file\n"


def test_a_read_only_file_system(run, config, tmp_path, monkeypatch):
    work = tmp_path / "ro" / "run"
    mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == work:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    result = run("train", config, "--work-dir", work, "--device", "cpu")
    one_message(result, 5, f"cannot write to the work directory {work}: Read-only file system")
    assert "hint: that file system is mounted read-only: write somewhere else" in result.output


def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_one(run, config, tmp_path,
                                                                     monkeypatch):
    work = tmp_path / "work"
    real_save = torch.save
    seen: dict[str, str] = {}

    def save_then_fill_the_disk(obj, f, *args, **kwargs):
        if not (work / "epoch_1.pth").exists():
            return real_save(obj, f, *args, **kwargs)
        seen["before"] = hashlib.sha256((work / "epoch_1.pth").read_bytes()).hexdigest()
        f.write(b"\0" * 1024)  # part of the file made it to disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_then_fill_the_disk)
    result = run("train", config, "--work-dir", work, "--device", "cpu",
                 "--set", "runner.max_epochs=2", "--set", "data.val=false")
    one_message(result, 5, f"cannot write checkpoint {work / 'epoch_2.pth'}: No space left on "
                           "device; the checkpoints already written are intact")
    assert "hint: free space on that file system, or write somewhere else" in result.output
    assert hashlib.sha256((work / "epoch_1.pth").read_bytes()).hexdigest() == seen["before"]
    assert read_checkpoint(work / "epoch_1.pth")["meta"]["epoch"] == 1
    assert (work / "latest.pth").resolve() == (work / "epoch_1.pth").resolve()
    assert not list(work.glob("*.tmp")) and not (work / "epoch_2.pth").exists()


def test_a_metrics_line_the_file_system_refuses(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()  # a folder where the file should be
    hook = LoggerHook(tmp_path / "metrics.jsonl")
    trainer = types.SimpleNamespace(dist=types.SimpleNamespace(is_main=True))
    with pytest.raises(StorageError) as info:
        hook.on_log(trainer, {"mode": "train", "iter": 1})
    assert str(info.value) == (f"cannot write the metrics log {tmp_path / 'metrics.jsonl'}: "
                               "Is a directory")
    assert info.value.hint == "a folder stands where the file should be: remove or rename it"


class FullDisk:
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        pass


def test_a_train_log_line_on_a_full_disk_raises_instead_of_printing_a_traceback(tmp_path, capsys):
    handler = attach_log_file(tmp_path)
    handler.stream = FullDisk()
    try:
        with pytest.raises(StorageError) as info:
            logging.getLogger("detcli.engine.trainer").warning("a line")
    finally:
        detach_log_file(handler)  # nothing raised on the way out
    assert str(info.value) == (f"cannot write the training log {tmp_path / 'train.log'}: No space "
                               "left on device")
    assert "Logging error" not in capsys.readouterr().err


def test_the_list_of_skipped_images_on_a_bad_path(tmp_path):
    from detcli.data.loader import SkipBadImages, SkippedImage

    (tmp_path / "notes.txt").write_text("")
    wrapped = SkipBadImages([], record_file=tmp_path / "notes.txt" / "skipped_images.jsonl")
    with pytest.raises(StorageError, match="notes.txt is a file, not a folder"):
        wrapped._record(SkippedImage(0, "a.jpg", "cannot decode"))


def test_the_latest_link_and_pruning_on_a_read_only_file_system(tmp_path, monkeypatch):
    """Pointing latest.pth at a new checkpoint and pruning old ones are writes too: a refusal
    is a StorageError naming the path, and the checkpoint already written stays."""
    from detcli.engine.hooks import checkpoint_hook

    saved = tmp_path / "epoch_2.pth"
    saved.write_bytes(b"weights")

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checkpoint_hook.os, "replace", refuse)
    with pytest.raises(StorageError, match=r"latest-checkpoint link .*latest\.pth: Read-only"):
        checkpoint_hook.point_latest(saved)
    assert saved.read_bytes() == b"weights"
    (tmp_path / "epoch_1.pth").write_bytes(b"old")
    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.raises(StorageError, match=r"old checkpoint .*epoch_1\.pth"):
        checkpoint_hook.prune(tmp_path, "epoch", keep=1)
