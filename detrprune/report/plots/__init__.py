"""The study's plots: accuracy and cost against the pruning ratio, the accuracy / latency
trade-off, where the compute, the time and the zeros are by model part, and the iterative loop's
steps.

A ratio means one thing for filter pruning (the share of channels removed) and another for weight
pruning (the share of weights zeroed), so every plot against the ratio draws each kind on a panel
of its own, whose axis says which it is (:func:`ratio_label`).

Each figure is a deterministic PNG (fixed style, no Software metadata), written atomically.

One module per concern, their public names importable from here:

* :mod:`~detrprune.report.plots.draw`: :func:`make_plots` and the builder of each PNG;
* :mod:`~detrprune.report.plots.style`: the fixed style, method colours, the PNG writer;
* :mod:`~detrprune.report.plots.series`: what the plots read from the summary table;
* :mod:`~detrprune.report.plots.ratio`: the plots against the pruning ratio;
* :mod:`~detrprune.report.plots.tradeoff`: accuracy against speed with its Pareto front;
* :mod:`~detrprune.report.plots.by_part`: GMACs, latency and sparsity by model part;
* :mod:`~detrprune.report.plots.training`: the baseline's convergence, the iterative loop.
"""

from __future__ import annotations

import matplotlib

# The workflow runs headless (cluster nodes, CI): never let matplotlib look for a display.
# Importing any module of this package runs this first, before that module imports pyplot.
matplotlib.use("Agg")

from detrprune.report.plots.draw import Builder, figure, make_plots  # noqa: E402
from detrprune.report.plots.ratio import has_gpu_latency  # noqa: E402
from detrprune.report.plots.series import RATIO_LABELS, ratio_kinds, ratio_label  # noqa: E402
from detrprune.report.plots.style import PLOT_DPI, report_style  # noqa: E402
from detrprune.report.plots.tradeoff import (  # noqa: E402
    SpeedAxis,
    draw_tradeoff,
    speed_axis,
    tradeoff_zoom,
)

__all__ = [
    "PLOT_DPI",
    "RATIO_LABELS",
    "Builder",
    "SpeedAxis",
    "draw_tradeoff",
    "figure",
    "has_gpu_latency",
    "make_plots",
    "ratio_kinds",
    "ratio_label",
    "report_style",
    "speed_axis",
    "tradeoff_zoom",
]
