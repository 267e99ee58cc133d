"""Analysis and visualisation logic that commands render (drawing boxes, anchors, assignments).

Nothing here registers components, so importing the package loads no submodule.
"""
