"""Rule report: plots and results/report.pdf from the summary table (and the iterative steps)."""

from pathlib import Path

import pandas as pd

from detrprune.jobs import log_to
from detrprune.report.convergence import read_validations
from detrprune.report.pdf import summarize_config, write_report
from detrprune.report.plots import make_plots

with log_to(snakemake.log[0]):
    summary = pd.read_csv(snakemake.input.summary)
    steps = pd.read_csv(snakemake.input.steps) if snakemake.input.get("steps") else None
    validations = read_validations(snakemake.input.validations)
    plots = make_plots(summary, Path(snakemake.output.plots[0]).parent, steps, validations)
    missing = sorted(set(snakemake.output.plots) - {str(p) for p in plots})
    if missing:
        raise RuntimeError(f"report: plots not written: {missing}")
    config_summary = summarize_config(snakemake.params.study)
    write_report(summary, plots, config_summary, snakemake.output.pdf, steps, validations)
