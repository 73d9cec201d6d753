"""The last stage of the workflow: the summary table, the plots and the PDF report.

* :mod:`detrprune.report.summary` merges every variant's ``metrics.json`` into ``summary.csv``;
* :mod:`detrprune.report.plots` draws the accuracy / cost trade-off plots as PNGs;
* :mod:`detrprune.report.pdf` bundles a title page, the tables and the plots into one PDF.

Every output is written atomically and is byte-identical for identical inputs (no timestamps,
fixed float formats, fixed matplotlib style), so Snakemake reruns and diffs stay meaningful.

The plot catalogue lives here, free of matplotlib, because the rules read it too: which PNGs
``rules/report.smk`` declares and where ``snakemake --report`` files each of them.
"""

from __future__ import annotations

# Each plot's file stem -> (category, subcategory) under `snakemake --report`; its caption is
# report/<stem>.rst. The order is the order they are drawn and appear in the PDF.
PLOT_SECTIONS: dict[str, tuple[str, str]] = {
    "map_vs_ratio": ("1 Accuracy", "against the pruning ratio"),
    "gmacs_vs_ratio": ("2 Cost", "against the pruning ratio"),
    "latency_vs_ratio": ("2 Cost", "against the pruning ratio"),
    "accuracy_vs_latency": ("1 Accuracy", "trade-off"),
    "size_vs_ratio": ("2 Cost", "against the pruning ratio"),
    "gmacs_by_part": ("2 Cost", "by model part"),
    "latency_by_part": ("2 Cost", "by model part"),
    "sparsity_by_part": ("2 Cost", "by model part"),
}
# Drawn first when the baseline's validations during training are given.
TRAINING_PLOT_SECTION: dict[str, tuple[str, str]] = {
    "baseline_training": ("1 Accuracy", "baseline convergence"),
}
# Drawn after the others when the iterative prune/fine-tune loop ran.
ITERATIVE_PLOT_SECTION: dict[str, tuple[str, str]] = {
    "iterative_steps": ("3 Iterative loop", "steps"),
}

PLOT_NAMES: tuple[str, ...] = tuple(f"{stem}.png" for stem in PLOT_SECTIONS)
ITERATIVE_PLOT = f"{next(iter(ITERATIVE_PLOT_SECTION))}.png"


def report_plots(iterative: bool, training: bool = True) -> dict[str, tuple[str, str]]:
    """The plots a study draws, file stem -> report section, in drawing order: the baseline's
    training curve (``training``), the trade-offs, the iterative loop's steps (``iterative``)."""
    return {
        **(TRAINING_PLOT_SECTION if training else {}),
        **PLOT_SECTIONS,
        **(ITERATIVE_PLOT_SECTION if iterative else {}),
    }
