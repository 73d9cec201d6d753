"""The PDF report. Page 1 answers the study's question for this run: how far each kind of pruning
went with no significant mAP drop against its control of equal training, what that bought in
speed and size, what collapsed and on which machine (:func:`detrprune.report.findings.answer`),
beside the accuracy-vs-speed figure with its Pareto front (:func:`detrprune.report.plots.
draw_tradeoff`). Then the recovery, summary, detail, latency-elasticity, 2:4-on-GPU, seed and
iterative-step tables, one page per plot, and the appendix: the baseline, how to read the
numbers, every recovery claim in words, the study's settings and the study it reproduces.
Byte-identical for identical inputs: no creation dates, fixed fonts (TrueType, so the text stays
extractable).

One module per concern, their public names importable from here:

* :mod:`~detrprune.report.pdf.write`: :func:`write_report`, the pages in their order;
* :mod:`~detrprune.report.pdf.layout`: the title, page sizes, number format, monospace text;
* :mod:`~detrprune.report.pdf.answer`: page 1, the answer beside the trade-off figure;
* :mod:`~detrprune.report.pdf.tables`: the tables' columns, notes, rows and pages;
* :mod:`~detrprune.report.pdf.appendix`: the appendix and the config it prints.
"""

from __future__ import annotations

from detrprune.report.pdf.appendix import summarize_config
from detrprune.report.pdf.layout import REPORT_TITLE, REPRODUCED_STUDY
from detrprune.report.pdf.tables import (
    elasticity_table,
    recovery_table,
    seed_table,
    semi_structured_table,
)
from detrprune.report.pdf.write import write_report

__all__ = [
    "REPORT_TITLE",
    "REPRODUCED_STUDY",
    "elasticity_table",
    "recovery_table",
    "semi_structured_table",
    "seed_table",
    "summarize_config",
    "write_report",
]
