"""Precision-recall curves (``det test --plots``: ``pr_curves_50.png``, ``pr_curves_75.png``),
drawn with matplotlib through :mod:`detcli.viz.figures`.

One figure per IoU threshold (:class:`~detcli.evaluation.pr_curves.PRCurves`): every class with
GT as a thin line (R recall thresholds on x, COCO's interpolated precision on y), the
all-classes mean as a thick dark line drawn last, and each line's AP in the legend
("cat  AP50 0.512"). With more than :data:`MAX_LEGEND_CLASSES` classes the class lines are
drawn thin and grey without legend entries, so the legend stays readable. Classes without GT
have no curve. :func:`pr_figure` returns the figure so its lines can be read back
(``ax.lines``: the classes in label order, then the mean).
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from detcli.evaluation.pr_curves import PRCurves
from detcli.viz.figures import colour, new_figure, save_figure

MAX_LEGEND_CLASSES = 20
MEAN_COLOUR = "#1a1a1a"
CROWD_COLOUR = "#9e9e9e"  # the class lines when there are too many to name


def ap_label(iou: float) -> str:
    """"AP50" for 0.5, "AP75" for 0.75."""
    return f"AP{round(iou * 100):d}"


def pr_figure(curves: PRCurves) -> Figure:
    """The PR curves of every class with GT and of all classes at ``curves.iou``."""
    fig, ax = new_figure(6.4, 4.8)
    name = ap_label(curves.iou)
    named = len(curves.class_names) <= MAX_LEGEND_CLASSES
    for k, (cls, ap, precision) in enumerate(zip(curves.class_names, curves.ap, curves.precision)):
        if ap is None:
            continue
        if named:
            ax.plot(curves.recall, precision, color=colour(k), linewidth=1.2,
                    label=f"{cls}  {name} {ap:.3f}")
        else:
            ax.plot(curves.recall, precision, color=CROWD_COLOUR, linewidth=0.6, alpha=0.6)
    if curves.mean_ap is not None:
        ax.plot(curves.recall, curves.mean_precision, color=MEAN_COLOUR, linewidth=2.6,
                label=f"all classes  {name} {curves.mean_ap:.3f}")
        ax.legend(loc="lower left", fontsize=8, framealpha=0.85)
    else:
        ax.text(0.5, 0.5, "no GT: nothing to measure", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated, COCO)")
    ax.set_title(f"precision-recall at IoU {curves.iou:.2f} (area all, maxDets 100)")
    return fig


def write_pr_curves(curves: PRCurves, path: str | Path) -> Path:
    """Draw :func:`pr_figure` and write it as a PNG at ``path``."""
    return save_figure(pr_figure(curves), path, f"the PR curves at IoU {curves.iou:.2f}")
