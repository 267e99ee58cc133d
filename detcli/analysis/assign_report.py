"""What ``det viz assign`` reports: the assignment view, the RoI head's sampling for a
two-stage detector, and the pictures drawn of them.

Apart from :mod:`detcli.analysis.assign_view` because it holds both views: the RoI sampling
replay (:mod:`detcli.analysis.roi_sampling`) starts from an assignment view, so the report of
the two sits above both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    two-stage detector the RoI head's sampling and its picture (``rcnn``: a cascade's stage 0),
    with every stage's of a cascade in ``rcnn_stages``."""

    view: AssignmentView
    picture: PictureFile
    rcnn: Optional[RoISamplingView] = None
    rcnn_picture: Optional[PictureFile] = None
    rcnn_stages: list[tuple[RoISamplingView, PictureFile]] = field(default_factory=list)

    def add_rcnn_stage(self, rcnn: RoISamplingView, picture: PictureFile) -> None:
        """The next RoI stage's sampling and picture; the first is ``rcnn``."""
        if not self.rcnn_stages:
            self.rcnn, self.rcnn_picture = rcnn, picture
        self.rcnn_stages.append((rcnn, picture))

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``det viz assign --json`` (docs/viz.md)."""
        data = {**self.view.to_dict(), **self.picture.to_dict()}
        if self.rcnn is not None and self.rcnn_picture is not None:
            data["rcnn"] = {**self.rcnn.to_dict(), **self.rcnn_picture.to_dict()}
            if len(self.rcnn_stages) > 1:
                data["rcnn"]["stages"] = [{**rcnn.to_dict(), **picture.to_dict()}
                                          for rcnn, picture in self.rcnn_stages]
        return data
