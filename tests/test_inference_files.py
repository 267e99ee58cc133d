"""What `det predict` calls each input under --out (one folder, several, files, globs, clashes),
and video files read and written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.errors import DataError
from detcli.inference.files import collect_inputs
from detcli.inference.video import VideoReader, VideoWriter, annotated_video_path


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))
    return path


def names(inputs) -> list[str]:
    return [f.name.as_posix() for f in collect_inputs([str(i) for i in inputs])]


def test_one_folder_names_are_inside_it(tmp_path):
    touch(tmp_path / "val" / "a.jpg"), touch(tmp_path / "val" / "sub" / "b.png")
    assert names([tmp_path / "val"]) == ["a.jpg", "sub/b.png"]


def test_several_folders_keep_their_own_names_absolute_or_not(tmp_path, monkeypatch):
    touch(tmp_path / "deep" / "down" / "val" / "a.jpg"), touch(tmp_path / "test" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    # an absolute folder is not recreated whole under --out: its own name only
    assert names([tmp_path / "deep" / "down" / "val", "test"]) == ["test/a.jpg", "val/a.jpg"]


def test_files_and_globs(tmp_path):
    touch(tmp_path / "x" / "one.jpg"), touch(tmp_path / "shots" / "day1" / "two.png")
    assert names([tmp_path / "x" / "one.jpg", f"{tmp_path}/shots/**/*.png"]) == \
        ["day1/two.png", "one.jpg"]


def test_a_clash_falls_back_to_the_shared_folder(tmp_path):
    a, b = touch(tmp_path / "a" / "img.jpg"), touch(tmp_path / "b" / "img.jpg")
    assert names([a, b]) == ["a/img.jpg", "b/img.jpg"]  # nothing overwritten


def test_a_file_named_twice_is_taken_once(tmp_path):
    image = touch(tmp_path / "val" / "a.jpg")
    assert names([tmp_path / "val", image]) == ["a.jpg"]


def test_folders_contribute_videos_and_flag_them(tmp_path):
    touch(tmp_path / "in" / "a.jpg")
    (tmp_path / "in" / "clip.mp4").write_bytes(b"")
    found = collect_inputs([str(tmp_path / "in")])
    assert [(f.name.as_posix(), f.is_video) for f in found] == [("a.jpg", False),
                                                                  ("clip.mp4", True)]


def write_video(path: Path, frames: int, size=(48, 32), fps=5.0) -> list[np.ndarray]:
    """A video whose frame k has a white bar at x = 4k (mp4v); returns the frames written."""
    writer = VideoWriter(path, fps, *size)
    written = []
    for k in range(frames):
        frame = np.zeros((size[1], size[0], 3), np.uint8)
        frame[:, 4 * k: 4 * k + 4] = 255
        writer.write(frame)
        written.append(frame)
    writer.close()
    return written


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mov", ".mkv"])
def test_video_round_trip(tmp_path, suffix):
    path = tmp_path / f"clip{suffix}"
    written = write_video(path, frames=6)
    reader = VideoReader(path)
    assert (reader.info.fps, reader.info.num_frames) == (5.0, 6)
    assert (reader.info.width, reader.info.height) == (48, 32)
    frames = list(reader)
    assert [i for i, _ in frames] == list(range(6))
    for (_, frame), expected in zip(frames, written):  # lossy codec: the bar is where it was
        assert int(np.abs(frame.astype(int) - expected).mean()) < 20


def test_unreadable_video_and_frame_size_are_data_errors(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(DataError, match="broken.mp4"):
        list(VideoReader(broken))
    writer = VideoWriter(tmp_path / "out.mp4", 5.0, 48, 32)
    with pytest.raises(DataError, match="frame of 10x10 in a video of 48x32"):
        writer.write(np.zeros((10, 10, 3), np.uint8))
    writer.close()


def test_annotated_video_names_do_not_clash():
    assert annotated_video_path(Path("out"), Path("a/clip.mp4")) == Path("out/a/clip.mp4")
    assert annotated_video_path(Path("out"), Path("clip.avi")) == Path("out/clip.avi.mp4")
