"""Drawing: boxes with captions, the assignment and RoI sampling pictures and dataset grids
(OpenCV), and charts such as the anchor report's (matplotlib, through :mod:`detcli.viz.figures`),
from ``detcli.analysis``'s reports.

Nothing here registers components, so importing the package loads no submodule.
"""
