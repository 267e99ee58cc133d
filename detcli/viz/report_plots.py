"""Write an :class:`~detcli.evaluation.report.EvaluationReport` as pictures and JSON into one
folder (``det test --plots DIR``; the work dir's ``plots/`` at the end of training).

Files (:data:`PLOT_FILES` in order, then ``report.json``):

- ``pr_curves_50.png``, ``pr_curves_75.png``: the PR curves (:mod:`detcli.viz.pr_plots`);
- ``confusion_matrix.png``, ``confusion_matrix_normalised.png``: the confusion matrix, counts
  and row-normalised (:mod:`detcli.viz.confusion_plots`);
- ``errors.png``: the TIDE-style error breakdown (:mod:`detcli.viz.confusion_plots`);
- ``report.json``: :meth:`EvaluationReport.to_json`.
"""

from __future__ import annotations

from pathlib import Path

from detcli.evaluation.report import REPORT_JSON, EvaluationReport, write_report_json
from detcli.viz.confusion_plots import write_confusion_matrix, write_error_breakdown
from detcli.viz.pr_plots import write_pr_curves

PLOT_FILES = ("pr_curves_50.png", "pr_curves_75.png", "confusion_matrix.png",
              "confusion_matrix_normalised.png", "errors.png")


def write_report_plots(report: EvaluationReport, out_dir: str | Path) -> list[Path]:
    """Draw every picture of ``report`` and write ``report.json`` in ``out_dir``; the paths
    written, in :data:`PLOT_FILES` order, ``report.json`` last."""
    out = Path(out_dir)
    return [
        write_pr_curves(report.curves_at(0.5), out / "pr_curves_50.png"),
        write_pr_curves(report.curves_at(0.75), out / "pr_curves_75.png"),
        write_confusion_matrix(report.confusion, out / "confusion_matrix.png"),
        write_confusion_matrix(report.confusion, out / "confusion_matrix_normalised.png",
                               normalised=True),
        write_error_breakdown(report.errors, out / "errors.png"),
        write_report_json(report, out / REPORT_JSON),
    ]
