"""Write an :class:`~detcli.evaluation.report.EvaluationReport` as pictures and JSON into one
folder (``det test --plots DIR``; the work dir's ``plots/`` at the end of training).

Files (:data:`PLOT_FILES` in order, then ``report.json``):

- ``pr_curves_50.png``, ``pr_curves_75.png``: :mod:`detcli.viz.pr_plots`;
- ``report.json``: :meth:`EvaluationReport.to_json`.
"""

from __future__ import annotations

from pathlib import Path

from detcli.evaluation.report import REPORT_JSON, EvaluationReport, write_report_json
from detcli.viz.pr_plots import write_pr_curves

PLOT_FILES = ("pr_curves_50.png", "pr_curves_75.png")


def write_report_plots(report: EvaluationReport, out_dir: str | Path) -> list[Path]:
    """Draw every picture of ``report`` and write ``report.json`` in ``out_dir``; the paths
    written, in :data:`PLOT_FILES` order, ``report.json`` last."""
    out = Path(out_dir)
    written = [write_pr_curves(report.curves_at(0.5), out / "pr_curves_50.png"),
               write_pr_curves(report.curves_at(0.75), out / "pr_curves_75.png")]
    return [*written, write_report_json(report, out / REPORT_JSON)]
