"""Page 1 of the report: the study's answer for this run in words
(:func:`~detrprune.report.findings.answer`) above the accuracy-vs-speed figure with its Pareto
front (:func:`~detrprune.report.plots.tradeoff.draw_tradeoff`), under the title and the study it
reproduces.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from detrprune import __version__
from detrprune.report.convergence import judge_convergence
from detrprune.report.findings import answer
from detrprune.report.pdf.layout import _PAGE_PORTRAIT, REPORT_TITLE, REPRODUCED_STUDY, _monospace
from detrprune.report.plots.tradeoff import draw_tradeoff
from detrprune.report.summary import baseline_row

# Page 1: its monospace answer lines (page fractions) and the least height its figure keeps.
_ANSWER_TOP = 0.895
_ANSWER_STEP = 0.0097
_ANSWER_FONTSIZE = 6.5
_FIGURE_MIN_HEIGHT = 0.36


def _answer_page(summary: pd.DataFrame, validations: pd.DataFrame | None = None) -> Figure:
    """Page 1: the study's answer for this run in words (:func:`~detrprune.report.findings.
    answer`, with the baseline's convergence when ``validations`` are given) above the
    accuracy-vs-speed figure with its Pareto front
    (:func:`~detrprune.report.plots.draw_tradeoff`), and the study it reproduces.

    The figure keeps at least ``_FIGURE_MIN_HEIGHT`` of the page: lines beyond what fits above
    it are cut, with a pointer to the tables (a study of many more methods than the workflow's).
    """
    fig = plt.figure(figsize=_PAGE_PORTRAIT)
    # zorder -1: the text is drawn, and so extracted, before the figure's axes.
    fig.text(0.5, 0.975, REPORT_TITLE, ha="center", va="top", fontsize=16, weight="bold", zorder=-1)
    subtitle = f"What this run measured (detrprune {__version__})"
    fig.text(0.5, 0.953, subtitle, ha="center", va="top", fontsize=9, zorder=-1)
    for i, line in enumerate(REPRODUCED_STUDY):
        fig.text(0.5, 0.937 - i * 0.012, line, ha="center", va="top", fontsize=7.5, zorder=-1)
    training = None if validations is None else judge_convergence(validations).sentence()
    lines = answer(summary, baseline_row(summary), training)
    room = int((_ANSWER_TOP - _FIGURE_MIN_HEIGHT - 0.08) / _ANSWER_STEP)
    if len(lines) > room:
        lines = [*lines[: room - 1], "  (more in the recovery and summary tables)"]
    _monospace(fig, lines, _ANSWER_TOP, _ANSWER_STEP, _ANSWER_FONTSIZE)
    # Room for the figure's title and its top axis (the latency) above the spec.
    top = _ANSWER_TOP - len(lines) * _ANSWER_STEP - 0.06
    spec = fig.add_gridspec(1, 1, left=0.08, right=0.97, top=top, bottom=0.02)[0]
    draw_tradeoff(fig, spec, summary, baseline=baseline_row(summary), max_columns=6, fontsize=6.5)
    return fig
