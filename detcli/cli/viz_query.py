"""``det viz assign`` on a query-based detector (DETR): the Hungarian matching of its queries
to the image's GT, a picture (:mod:`detcli.viz.query_picture`), a table per GT and ``--json``;
for DINO also its denoising queries (:mod:`detcli.cli.viz_denoising`).

The work is :func:`detcli.analysis.query_matching.visualize_query_matching`'s; this module
only checks the options, writes the picture and prints. ``detcli.cli.viz.assign`` hands a
config whose model has ``num_queries`` here before anything of the dense path runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from rich.box import SIMPLE_HEAD
from rich.table import Table

from detcli.cli.common import console, plural, print_json
from detcli.cli.viz_denoising import DN_GROUPS, print_denoising

if TYPE_CHECKING:
    from detcli.analysis.query_matching import QueryMatching


def _cost_header(matching: QueryMatching) -> list[str]:
    return [f"{name} x{weight:g}" for name, weight in matching.costs]


def _cells(matching: QueryMatching) -> list[list[str]]:
    """One row per GT: index, class, size, query, each weighted cost, total, IoU, cheapest."""
    rows = []
    for gt in matching.gts:
        w, h = gt.box[2] - gt.box[0], gt.box[3] - gt.box[1]
        if gt.query is None:
            rest = ["-"] * (len(matching.costs) + 3) + ["NO QUERY"]
        else:
            cheapest = "" if gt.cheapest_query == gt.query else f"q{gt.cheapest_query}"
            rest = [*(f"{t.value:.3f}" for t in gt.terms), f"{gt.total:.3f}", f"{gt.iou:.3f}",
                    cheapest]
        query = "-" if gt.query is None else f"q{gt.query}"
        rows.append([str(gt.index), gt.class_name, f"{w:.0f}x{h:.0f}", query, *rest])
    return rows


def _table(matching: QueryMatching) -> Table:
    table = Table(title=f"{matching.assigner} on {matching.filename} (input "
                        f"{matching.pad_shape[1]}x{matching.pad_shape[0]}, "
                        f"{matching.num_queries} queries)", title_justify="left",
                  caption="each cost is weighted as in the total; cheaper: the query of least "
                          "cost for that GT alone, when the matching gave it to another GT",
                  caption_justify="left", box=SIMPLE_HEAD, pad_edge=False)
    for name in ("#", "class", "w x h", "query", *_cost_header(matching), "total", "IoU",
                 "cheaper"):
        table.add_column(name, justify="left" if name == "class" else "right", no_wrap=True)
    for gt, cells in zip(matching.gts, _cells(matching)):
        table.add_row(*cells, style="red" if gt.query is None else None)
    return table


def _plain_table(matching: QueryMatching) -> str:
    header = ["#", "class", "w_x_h", "query", *(n for n, _ in matching.costs), "total_cost",
              "iou", "cheaper_query"]
    return "\n".join(["\t".join(header)] + ["\t".join(c) for c in _cells(matching)])


def _layer_lines(matching: QueryMatching) -> list[str]:
    """Per GT, the matched query's IoU at each decoder layer (and that layer's own match)."""
    lines = []
    for gt in matching.gts:
        if not gt.layers:
            continue
        steps = ", ".join(f"L{s.layer} {s.iou:.3f}" + ("" if s.layer_query == gt.query else
                                                      f" (its match q{s.layer_query})"
                                                      if s.layer_query is not None else
                                                      " (unmatched there)") for s in gt.layers)
        lines.append(f"#{gt.index} q{gt.query} IoU by layer: {steps}")
    return lines


def _summary(matching: QueryMatching, out: Path, shape: tuple[int, int], layers: bool) -> list[str]:
    costs = " + ".join(f"{n} x{w:g}" for n, w in matching.costs)
    lines = [f"cost = {costs}; every unmatched query learns background",
             matching.source_text]
    if layers:
        lines += _layer_lines(matching)
    missing = matching.unmatched_gts
    if missing:
        ids = ", ".join(f"#{i}" for i in missing)
        lines.append(f"[red]{plural(len(missing), 'GT box', 'GT boxes')} without a query "
                     f"(more GT than the {matching.num_queries} queries): {ids}[/]")
    lines.append(f"wrote {out} ({shape[1]}x{shape[0]})")
    return lines


def assign_queries(cfg: Any, image: Path, gt: Any, *, out: Optional[Path], layers: bool,
                   train_pipeline: bool, seed: int, checkpoint: Optional[Path],
                   device: Optional[str], as_json: bool, unused: Sequence[str],
                   dn_groups: Optional[int] = None) -> None:
    """``det viz assign`` for a query-based detector; ``unused``: the given options that
    apply to priors or RoI sampling only (an error names them); ``dn_groups``: DINO's
    denoising groups to draw and tabulate (default :data:`DN_GROUPS`; --json has all)."""
    from detcli.analysis.denoising_view import denoising_generator
    from detcli.analysis.query_matching import visualize_query_matching
    from detcli.errors import DetError
    from detcli.viz.draw import save_image
    from detcli.viz.query_picture import draw_query_matching

    if unused:
        raise DetError(f"{', '.join(unused)}: {cfg.model.type} is a query-based detector "
                       "without priors or RoI sampling; its picture is the Hungarian "
                       "matching (--layers: one panel per decoder layer)")
    if layers and checkpoint is None:
        raise DetError("--layers needs --checkpoint: the stand-in queries have one layer; the "
                       "decoder layers are a trained model's")
    if dn_groups is not None and denoising_generator(cfg.model) is None:
        raise DetError(f"--dn-groups {dn_groups}: {cfg.model.type} has no denoising queries; "
                       "--dn-groups applies to DINO (model.dn_cfg)")
    matching = visualize_query_matching(cfg, image, gt, train_pipeline=train_pipeline,
                                        seed=seed, checkpoint=checkpoint, device=device)
    groups = DN_GROUPS if dn_groups is None else dn_groups
    picture = draw_query_matching(matching, layers=layers, dn_groups=groups)
    out = out if out is not None else Path(f"{image.stem}_assign.png")
    save_image(out, picture)
    shape = picture.shape[:2]
    if as_json:
        print_json({**matching.to_dict(), "picture": str(out), "picture_shape": list(shape)})
        return
    if console.is_terminal:
        console.print(_table(matching))
    else:
        sys.stdout.write(_plain_table(matching) + "\n")  # tab-separated: rich would expand tabs
    *lines, wrote = _summary(matching, out, shape, layers)
    for line in lines:
        console.print(line, highlight=False)
    if matching.denoising is not None:  # DINO: after the matching, before "wrote ..."
        print_denoising(matching, groups)
    console.print(wrote, highlight=False)
