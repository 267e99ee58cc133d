"""Drawing (OpenCV): boxes with captions, the assignment and RoI sampling pictures, dataset
grids and the anchor report's charts, from ``detcli.analysis``'s reports.

Nothing here registers components, so importing the package loads no submodule.
"""
