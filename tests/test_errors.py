"""detcli.errors: errors from loader workers read like the main process's; OS write faults
become one StorageError naming the path and the cause."""

from __future__ import annotations

import errno
import sys

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from detcli.errors import ConfigError, DataError, StorageError, storage_error, writing


class Failing(Dataset):
    """Item 1 raises ``error``; a chained cause makes the worker's traceback text longer."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> torch.Tensor:
        if index == 1:
            try:
                raise ValueError("the cause")
            except ValueError as cause:
                raise self.error from cause
        return torch.zeros(1)


def test_an_error_raised_in_a_loader_worker_keeps_its_message_and_hint():
    error = DataError("cannot decode image file a.jpg: not an image\nsecond line",
                      hint="run `det data check CONFIG`")
    with pytest.raises(DataError) as info:
        list(DataLoader(Failing(error), num_workers=1))
    assert str(info.value) == "cannot decode image file a.jpg: not an image\nsecond line"
    assert "Caught" not in str(info.value) and "Traceback" not in str(info.value)
    if sys.version_info >= (3, 11):  # the hint travels as a note of the worker's exception
        assert info.value.hint == "run `det data check CONFIG`"
        assert any("in DataLoader worker process 0" in n and "the cause" in n
                   for n in info.value.__notes__)  # --debug still shows where it was raised


def test_a_config_error_from_a_worker_keeps_its_issue_lines():
    error = ConfigError("2 problems in the config\n  a.b: unknown key 'c'")
    with pytest.raises(ConfigError) as info:
        list(DataLoader(Failing(error), num_workers=1))
    assert str(info.value) == "2 problems in the config\n  a.b: unknown key 'c'"


def test_a_message_that_only_looks_like_a_worker_text_is_left_alone():
    text = "Caught DataError in DataLoader worker process 0.\nOriginal Traceback: not really"
    assert str(DataError(text)) == text
    other = "Caught ValueError in DataLoader worker process 3.\nOriginal Traceback (most recent " \
            "call last):\nValueError: x"
    assert str(DataError(other)) == other  # another class's text


@pytest.mark.parametrize("code, cause, hint", [
    (errno.ENOSPC, "No space left on device", "free space on that file system, or write somewhere else"),
    (errno.EROFS, "Read-only file system", "that file system is mounted read-only: write somewhere else"),
    (errno.EACCES, "Permission denied",
     "you lack write permission there: change the permissions, or write somewhere else"),
])
def test_storage_error_names_the_path_the_cause_and_a_fix(tmp_path, code, cause, hint):
    exc = OSError(code, cause)
    err = storage_error(exc, tmp_path / "epoch_2.pth", "checkpoint")
    assert isinstance(err, StorageError)
    assert str(err) == f"cannot write checkpoint {tmp_path / 'epoch_2.pth'}: {cause}"
    assert err.hint == hint


def test_a_folder_under_a_regular_file_names_that_file(tmp_path):
    (tmp_path / "notes.txt").write_text("a file")
    target = tmp_path / "notes.txt" / "run" / "config.toml"
    with pytest.raises(StorageError) as info:
        with writing(target, "the resolved config"):
            target.parent.mkdir(parents=True, exist_ok=True)
    assert str(info.value) == (f"cannot write the resolved config {target}: "
                               f"{tmp_path / 'notes.txt'} is a file, not a folder")
    assert info.value.hint == "move that file away, or choose another path"
    assert isinstance(info.value.__cause__, OSError)  # --debug shows the original


def test_writing_finds_the_os_error_torch_wraps_and_leaves_other_errors_alone(tmp_path):
    def torch_like_failure():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")

    with pytest.raises(StorageError, match="No space left on device"):
        with writing(tmp_path / "x.pth", "checkpoint"):
            torch_like_failure()
    with pytest.raises(RuntimeError, match="a bug"):
        with writing(tmp_path / "x.pth", "checkpoint"):
            raise RuntimeError("a bug")
