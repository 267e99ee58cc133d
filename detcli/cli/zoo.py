"""``det zoo``: MMDetection 3.3's model-zoo checkpoints det can start from (``mmdet://NAME``)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.table import Table

from detcli.cli.common import DebugOpt, JsonOpt, console, err_console, guarded, print_json

EXAMPLES_ARGS = ("det zoo", "det zoo --family mask_rcnn", "det zoo --json")


@guarded
def zoo(
    family: Annotated[Optional[str], typer.Option(metavar="FAMILY",
        help="Only this family (retinanet, fcos, atss, faster_rcnn, mask_rcnn, cascade_rcnn, "
             "detr, deformable_detr, dino, rtmdet).")] = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """List MMDetection's COCO checkpoints for det's families: name, det preset, box/mask AP.

    Start from one with det train CONFIG --init-from mmdet://NAME (downloaded into torch's hub
    cache when first asked for, hash-checked); nothing is downloaded by listing.
    """
    from detcli.errors import ConfigError
    from detcli.zoo.mmdet import entries, families

    if family is not None and family not in families():
        raise ConfigError(f"--family {family!r} is not one of det's zoo families",
                          hint=f"one of {', '.join(families())}")
    rows = entries(family)
    if as_json:
        print_json([row.as_dict() for row in rows])
        return
    table = Table(box=None, padding=(0, 2))
    for column in ("mmdet://NAME", "family", "det preset", "box AP", "mask AP"):
        table.add_column(column, no_wrap=column == "mmdet://NAME")
    for row in rows:
        table.add_row(row.name, row.family, row.preset or "-",
                      "-" if row.box_ap is None else f"{row.box_ap:.1f}",
                      "-" if row.mask_ap is None else f"{row.mask_ap:.1f}")
    console.print(table)
    err_console.print(f"{len(rows)} checkpoints; det train CONFIG --init-from mmdet://NAME "
                      "downloads one into torch's hub cache (det config import its MMDetection "
                      "config when it has no det preset)", highlight=False)
