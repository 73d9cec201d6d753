"""Drawing the study's plots: which builder draws each PNG that
:func:`detrprune.report.report_plots` names (:func:`figure`), and :func:`make_plots`, which
checks the tables, draws every plot in the report style and saves it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from detrprune.report import report_plots
from detrprune.report.plots.by_part import (
    _fig_gmacs_by_part,
    _fig_latency_by_part,
    _fig_sparsity_by_part,
)
from detrprune.report.plots.ratio import _fig_gmacs, _fig_latency, _fig_map, _fig_size
from detrprune.report.plots.style import _method_colours, _save_png, report_style
from detrprune.report.plots.tradeoff import _fig_accuracy_vs_latency
from detrprune.report.plots.training import _fig_iterative, _fig_training, _iterative_kind
from detrprune.report.summary import baseline_row, check_steps, check_summary

log = logging.getLogger(__name__)


# A figure from (summary table, colour per method, baseline row or None).
Builder = Callable[[pd.DataFrame, Mapping[str, Any], "pd.Series | None"], Figure]


def make_plots(
    summary: pd.DataFrame,
    plots_dir: Path,
    steps: pd.DataFrame | None = None,
    validations: pd.DataFrame | None = None,
) -> list[Path]:
    """Draw the trade-off plots of the summary table as deterministic PNGs.

    Args:
        summary: the table of :func:`~detrprune.report.summary.aggregate` (or its CSV).
        plots_dir: output folder (created if needed).
        steps: the iterative loop's per-step table, when it ran.
        validations: the baseline's validations during training
            (:func:`~detrprune.report.convergence.read_validations`), when recorded.

    Returns:
        The PNGs of :func:`detrprune.report.report_plots`, in its order (the iterative
        loop's when ``steps`` is given).

    Raises:
        ReportError: the table lacks a summary column or has no rows.
    """
    check_summary(summary)
    if steps is not None:
        check_steps(steps)
    plots_dir = Path(plots_dir)
    paths: list[Path] = []
    with report_style():
        plots = report_plots(iterative=steps is not None, training=validations is not None)
        for stem in plots:
            fig = figure(stem, summary, steps, validations)
            path = plots_dir / f"{stem}.png"
            try:
                fig.tight_layout()
                _save_png(fig, path)
            finally:
                plt.close(fig)
            paths.append(path)
            log.info("wrote %s", path)
    return paths


def figure(
    stem: str,
    summary: pd.DataFrame,
    steps: pd.DataFrame | None = None,
    validations: pd.DataFrame | None = None,
) -> Figure:
    """The figure :func:`make_plots` saves as ``<stem>.png``, open (the caller closes it).

    Drawn in the current style: :func:`make_plots` wraps it in :func:`report_style`.
    """
    colours = _method_colours(summary)
    baseline = baseline_row(summary)
    builders: dict[str, Builder] = {
        "map_vs_ratio": _fig_map,
        "gmacs_vs_ratio": _fig_gmacs,
        "latency_vs_ratio": _fig_latency,
        "accuracy_vs_latency": _fig_accuracy_vs_latency,
        "size_vs_ratio": _fig_size,
        "gmacs_by_part": _fig_gmacs_by_part,
        "latency_by_part": _fig_latency_by_part,
        "sparsity_by_part": _fig_sparsity_by_part,
        "iterative_steps": lambda *_: _fig_iterative(steps, baseline, _iterative_kind(summary)),
        "baseline_training": lambda *_: _fig_training(validations),
    }
    return builders[stem](summary, colours, baseline)
