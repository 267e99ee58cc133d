"""Video files for ``det predict``: frames in with OpenCV's ``VideoCapture``, an annotated copy
out with ``VideoWriter``.

A frame is an (H, W, 3) uint8 BGR array, what :class:`~detcli.inference.detector.Detector`
takes. The annotated copy has the input's frame size and rate and the ``mp4v`` codec, in an
``.mp4`` file whatever the input's container (``.mp4``, ``.avi``, ``.mov``, ``.mkv``). A file OpenCV
cannot open, or one without a single frame, is a DataError naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from detcli.errors import DataError

FOURCC = "mp4v"
DEFAULT_FPS = 25.0  # when the file does not say


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frames per second, frame count (0: unknown), frame size."""

    fps: float
    num_frames: int
    width: int
    height: int


class VideoReader:
    """``for index, frame in VideoReader(path)``: every frame, in order."""

    def __init__(self, path: str | Path) -> None:
        import cv2

        self.path = Path(path)
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot open this video (is it a video file, "
                            "with a codec OpenCV's FFmpeg reads?)")
        fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.info = VideoInfo(fps=fps if fps > 0 else DEFAULT_FPS,
                              num_frames=max(int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
                              width=int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                              height=int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        index = 0
        try:
            while True:
                ok, frame = self.capture.read()
                if not ok:
                    break
                yield index, frame
                index += 1
        finally:
            self.capture.release()
        if index == 0:
            raise DataError(f"{self.path}: the video has no frame OpenCV can decode")


class VideoWriter:
    """Writes BGR frames of one size to ``path`` (``.mp4``, ``mp4v``); :meth:`close` finishes it."""

    def __init__(self, path: str | Path, fps: float, width: int, height: int) -> None:
        import cv2

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (width, height)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*FOURCC), fps,
                                      self.size)
        if not self.writer.isOpened():
            raise DataError(f"{self.path}: OpenCV cannot write an {FOURCC} video here")

    def write(self, frame: np.ndarray) -> None:
        if (frame.shape[1], frame.shape[0]) != self.size:
            raise DataError(f"{self.path}: frame of {frame.shape[1]}x{frame.shape[0]} in a video "
                            f"of {self.size[0]}x{self.size[1]}")
        self.writer.write(np.ascontiguousarray(frame))

    def close(self) -> None:
        self.writer.release()


def annotated_video_path(out_dir: Path, name: Path) -> Path:
    """Where the annotated copy of the video named ``name`` goes: ``out_dir/name``, with
    ``.mp4`` added to another suffix (``clip.avi`` -> ``clip.avi.mp4``: no two videos clash)."""
    target = out_dir / name
    return target if target.suffix.lower() == ".mp4" else target.with_name(target.name + ".mp4")
