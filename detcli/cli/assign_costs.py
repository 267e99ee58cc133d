"""``det viz assign``'s table of the dynamic soft-label assignment (RTMDet): per GT its
candidate points, the sum of its k best IoUs, its dynamic k, its positives and their mean soft
label (:mod:`detcli.analysis.soft_label_explain`), rich on a terminal, tab-separated otherwise.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.box import SIMPLE_HEAD
from rich.table import Table

from detcli.cli.common import console

if TYPE_CHECKING:
    from detcli.analysis.assign_view import AssignmentView
    from detcli.analysis.soft_label_explain import CostExplanation, GTCosts

COLUMNS = ("#", "class", "inside", "inside per level", "top-k IoU sum", "dynamic k", "pos",
           "mean soft label")
PLAIN_COLUMNS = ("#", "class", "inside", "inside_per_level", "top_k_iou_sum", "dynamic_k",
                 "positives", "mean_soft_label")


def _cells(view: AssignmentView, gt: GTCosts) -> list[str]:
    return [str(gt.index), view.gts[gt.index].class_name, str(gt.num_inside),
            "/".join(str(n) for n in gt.num_inside_per_level), f"{gt.top_iou_sum:.3f}",
            str(gt.dynamic_k), str(gt.num_pos),
            f"{gt.mean_soft_label:.3f}" if gt.num_pos else "-"]


def _table(view: AssignmentView, costs: CostExplanation) -> Table:
    """Rich table: one row per GT; red rows have no positive point."""
    table = Table(title=f"dynamic k (topk {costs.topk}): {costs.num_candidates} candidate "
                        "points (inside any GT)", title_justify="left",
                  caption="inside: points inside the GT; dynamic k = max(1, int(top-k IoU "
                          "sum)); soft label: a positive's predicted-box IoU with its GT",
                  caption_justify="left", box=SIMPLE_HEAD, pad_edge=False)
    for name in COLUMNS:
        table.add_column(name, justify="left" if name == "class" else "right", no_wrap=True)
    for gt in costs.gts:
        table.add_row(*_cells(view, gt), style="red" if gt.num_pos == 0 else None)
    return table


def print_costs(view: AssignmentView) -> None:
    """The dynamic-k table and what the costs were computed on (nothing without costs)."""
    costs = view.explained.costs
    if costs is None:
        return
    if console.is_terminal:
        console.print(_table(view, costs))
    else:
        rows = ["\t".join(PLAIN_COLUMNS)] + ["\t".join(_cells(view, gt)) for gt in costs.gts]
        sys.stdout.write("\n" + "\n".join(rows) + "\n")
    console.print(f"cost = soft-label classification cost + {costs.iou_weight:g} x -log(IoU) "
                  f"+ 10^(centre distance / stride - {costs.soft_center_radius:g}); ranked by "
                  f"{costs.predictions}", highlight=False, markup=False)
