"""``det viz attention``: where a Deformable DETR or DINO decoder layer's deformable
cross-attention samples for a few queries of one image -- a picture per query
(:mod:`detcli.viz.attention_picture`), a table per query and ``--json``.

The work is :func:`detcli.analysis.attention.visualize_attention`'s; this module checks the
options, writes the pictures and prints. ``detcli.cli.viz`` registers :func:`attention` in
the ``det viz`` group.

Exit status: 0 done; 1 a bad option value (``--query``, ``--layer``, ``--top``); 2 a config
problem (one without deformable attention); 3 an image that cannot be read; 4 a checkpoint
that does not fit the config.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.box import SIMPLE_HEAD
from rich.table import Table

from detcli.cli.common import (
    DebugOpt,
    DeviceOpt,
    JsonOpt,
    SetOpt,
    console,
    examples,
    guarded,
    load,
    print_json,
    shown_default,
)

if TYPE_CHECKING:
    from detcli.analysis.attention import AttentionView, QueryAttention

ATTENTION_EXAMPLES = examples(
    "det viz attention dino_tiny_synth data/synth/val/000003.jpg "
    "--checkpoint work_dirs/dino_tiny_synth/latest.pth",
    "det viz attention my_deformable.toml photo.jpg --checkpoint model.pth --query 12 "
    "--layer 0 --out attention/")


def picture_path(out: Path, query: int) -> Path:
    """Where query ``query``'s picture goes: ``<out>/q<query>.png``."""
    return out / f"q{query}.png"


def _title(view: AttentionView, query: QueryAttention) -> str:
    box = "" if query.box is None else " box " + ",".join(f"{v:.0f}" for v in query.box)
    return (f"q{query.query} ({query.class_name} {query.score:.3f}{box}) at decoder layer "
            f"{view.layer} of {view.num_layers}: {view.num_heads} heads x {view.num_points} "
            f"points per level, reference {view.reference_kind}")


def _cells(query: QueryAttention) -> list[list[str]]:
    return [[f"L{lv.level}", f"{lv.map_shape[1]}x{lv.map_shape[0]}", f"{lv.weight_mass:.3f}",
             f"{lv.mean_distance:.1f}", f"{lv.weighted_distance:.1f}"] for lv in query.levels]


def _table(view: AttentionView, query: QueryAttention) -> Table:
    table = Table(title=_title(view, query), title_justify="left",
                  caption="weight: the level's share of the query's attention (mean over "
                          "heads; the levels sum to 1); distances in network-input pixels "
                          "from the level's reference point", caption_justify="left",
                  box=SIMPLE_HEAD, pad_edge=False)
    for name in ("level", "map w x h", "weight", "mean dist px", "weighted dist px"):
        table.add_column(name, justify="right", no_wrap=True)
    for cells in _cells(query):
        table.add_row(*cells)
    return table


def _plain_table(view: AttentionView) -> str:
    header = ["query", "level", "map_w_x_h", "weight_mass", "mean_distance_px",
              "weighted_distance_px"]
    lines = ["\t".join(header)]
    for query in view.queries:
        lines += ["\t".join([str(query.query), *cells]) for cells in _cells(query)]
    return "\n".join(lines)


@guarded
def attention(
    config: Annotated[Path, typer.Argument(help="A config file (TOML) or a preset name of a "
                                                "Deformable DETR or DINO.", show_default=False)],
    image: Annotated[Path, typer.Argument(help="An image file (any format OpenCV reads).",
                                          show_default=False)],
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", help="A .pth of this config; without it a seeded, untrained stand-in "
                             "model (said in the pictures and the output).",
        show_default=False)] = None,
    query: Annotated[Optional[list[int]], typer.Option(
        "--query", metavar="N", help="A query's index to draw. Repeatable.",
        show_default=False)] = None,
    top: Annotated[Optional[int], typer.Option(
        "--top", metavar="K", help="Draw the K best-scoring queries (last layer) "
                                   + shown_default("3"), show_default=False)] = None,
    layer: Annotated[Optional[int], typer.Option(
        "--layer", metavar="L", help="The decoder layer whose cross-attention is drawn "
                                     + shown_default("the last"), show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for the pictures, q<N>.png each "
                            + shown_default("<image stem>_attention"), show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the stand-in model.")] = 0,
    device: DeviceOpt = None,
    overrides: SetOpt = None,
    as_json: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Draw where a deformable decoder layer's queries sample on IMAGE, per level; table per query.

    For a Deformable DETR or DINO (any config whose decoder uses MultiScaleDeformableAttention):
    runs the model on IMAGE (the config's test pipeline), records the sampling locations and
    attention weights of decoder layer --layer's cross-attention, and writes one picture per
    query to --out: the query's predicted box, its reference point, the sampling points in
    their level's colour, sized and opaque by weight, and a panel per level. Prints per query
    and level the share of the attention and the mean distance from the reference. Without
    --checkpoint the model is a seeded, untrained stand-in, as the output says.
    """
    from detcli.analysis.attention import DEFAULT_TOP, visualize_attention
    from detcli.errors import DetError
    from detcli.viz.attention_picture import draw_query_attention
    from detcli.viz.draw import save_image

    if query and top is not None:
        raise DetError("give --query N (which queries) or --top K (the best K), not both")
    cfg = load(config, overrides).cfg
    view = visualize_attention(cfg, image, config_name=str(config), checkpoint=checkpoint,
                               queries=query, top=DEFAULT_TOP if top is None else top,
                               layer=layer, seed=seed, device=device)
    out = out if out is not None else Path(f"{image.stem}_attention")
    pictures = []
    for row in view.queries:
        picture = draw_query_attention(view, row)
        path = save_image(picture_path(out, row.query), picture)
        pictures.append({"query": row.query, "picture": str(path),
                         "picture_shape": list(picture.shape[:2])})
    if as_json:
        print_json({**view.to_dict(), "pictures": pictures})
        return
    if console.is_terminal:
        for row in view.queries:
            console.print(_table(view, row))
    else:
        sys.stdout.write(_plain_table(view) + "\n")  # tab-separated: rich would expand tabs
    console.print(view.source_text, highlight=False, markup=False)
    for written in pictures:
        shape = written["picture_shape"]
        console.print(f"wrote {written['picture']} ({shape[1]}x{shape[0]})", highlight=False,
                      markup=False)

