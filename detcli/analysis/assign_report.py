"""What ``det viz assign`` reports: the assignment view, the RoI head's sampling for a
two-stage detector, and the pictures drawn of them.

Apart from :mod:`detcli.analysis.assign_view` because it holds both views: the RoI sampling
replay (:mod:`detcli.analysis.roi_sampling`) starts from an assignment view, so the report of
the two sits above both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from detcli.analysis.assign_view import AssignmentView
from detcli.analysis.roi_sampling import RoISamplingView


@dataclass
class PictureFile:
    """Where a picture was written, and its (height, width)."""

    path: Path
    shape: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.path), "picture_shape": [int(v) for v in self.shape]}


@dataclass
class AssignReport:
    """What ``det viz assign`` reports: the assignment view and its picture, and for a
    two-stage detector the RoI head's sampling and its picture."""

    view: AssignmentView
    picture: PictureFile
    rcnn: Optional[RoISamplingView] = None
    rcnn_picture: Optional[PictureFile] = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``det viz assign --json`` (docs/viz.md)."""
        data = {**self.view.to_dict(), **self.picture.to_dict()}
        if self.rcnn is not None and self.rcnn_picture is not None:
            data["rcnn"] = {**self.rcnn.to_dict(), **self.rcnn_picture.to_dict()}
        return data
