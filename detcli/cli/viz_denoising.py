"""``det viz assign``'s report of DINO's denoising queries
(:class:`~detcli.analysis.denoising_view.DenoisingView`): a table per GT of its queries in the
first ``--dn-groups`` groups (rich on a terminal, tab-separated otherwise), then the layout,
the attention mask as counts and where the predicted boxes come from.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.box import SIMPLE_HEAD
from rich.table import Table

from detcli.cli.common import console

if TYPE_CHECKING:
    from detcli.analysis.denoising_view import DenoisingQuery, DenoisingView
    from detcli.analysis.query_matching import QueryMatching

DN_GROUPS = 2  # denoising groups drawn and tabulated without --dn-groups

COLUMNS = ("group", "role", "query", "noise", "IoU", "label", "pred IoU", "score")
PLAIN_COLUMNS = ("gt", "group", "role", "query", "noise", "iou", "label", "label_flipped",
                 "pred_iou", "pred_score")


def _label(matching: QueryMatching, label: int) -> str:
    names = matching.class_names
    return names[label] if 0 <= label < len(names) else str(label)


def _cells(matching: QueryMatching, query: DenoisingQuery, plain: bool = False) -> list[str]:
    """The row of one query; ``plain``: the label flip as a column of its own."""
    label = _label(matching, query.label)
    if plain:
        label += "\t" + str(query.label_flipped).lower()
    elif query.label_flipped:
        label += " (flipped)"
    return [str(query.group), query.role, f"dn{query.index}", f"{query.noise:.3f}",
            f"{query.iou:.3f}", label,
            "-" if query.pred_iou is None else f"{query.pred_iou:.3f}",
            "-" if query.pred_score is None else f"{query.pred_score:.3f}"]


def _table(matching: QueryMatching, view: DenoisingView, gt: int, groups: int) -> Table:
    shown = min(groups, view.num_groups)
    which = "group 0" if shown == 1 else f"groups 0-{shown - 1}"
    source = "stand-in predictions" if view.source == "stand_in" else "the checkpoint's"
    table = Table(title=f"#{gt} {matching.gts[gt].class_name}: denoising queries of {which} "
                        f"(of {view.num_groups}); pred: {source}", title_justify="left",
                  box=SIMPLE_HEAD, pad_edge=False)
    for name in COLUMNS:
        table.add_column(name, justify="left" if name in ("role", "label") else "right",
                         no_wrap=True)
    for query in view.of_gt(gt, groups):
        table.add_row(*_cells(matching, query), style="dim" if query.negative else None)
    return table


def summary_lines(view: DenoisingView, groups: int) -> list[str]:
    """The layout, the mask and the predictions' source, in words and numbers."""
    g, d, q, att = view.num_gts, view.num_queries, view.num_matching, view.attention
    shown = min(groups, view.num_groups)
    return [
        f"denoising: {view.num_groups} groups x 2 x {g} GT = {d} queries before the {q} "
        f"matching ones ({view.group_rule}); in group p, query p*{2 * g}+j is GT j's positive "
        f"copy, p*{2 * g}+{g}+j its negative",
        f"noise: a positive's corners move below {view.box_noise_scale / 2:g} x the GT's "
        f"side, a negative's {view.box_noise_scale / 2:g} to {view.box_noise_scale:g} x; a "
        f"label is redrawn with probability {view.label_noise_scale / 2:g}",
        f"attention mask {att.size}x{att.size}, {att.masked} pairs masked: the matching "
        f"queries see {att.matching_sees_denoising} denoising ones; the denoising queries see "
        f"{att.denoising_sees_other_groups} pairs in other groups, {att.denoising_sees_own_group}"
        f" in their own ({2 * g} each) and {att.denoising_sees_matching} matching ones",
        view.source_text,
        f"{shown} of {view.num_groups} groups drawn and tabulated (--dn-groups; --json has "
        "all)"]


def print_denoising(matching: QueryMatching, groups: int) -> None:
    """The tables per GT and :func:`summary_lines` (nothing to tabulate without GT)."""
    view = matching.denoising
    if view is None:
        return
    if view.queries and console.is_terminal:
        for gt in range(view.num_gts):
            console.print(_table(matching, view, gt, groups))
    elif view.queries:
        rows = ["\t".join(PLAIN_COLUMNS)]
        for gt in range(view.num_gts):
            rows += ["\t".join([str(gt), *_cells(matching, query, plain=True)])
                     for query in view.of_gt(gt, groups)]
        sys.stdout.write("\n" + "\n".join(rows) + "\n")
    for line in summary_lines(view, groups):
        console.print(line, highlight=False, markup=False)
