"""Writing the PDF report: the pages in their order (the answer, the tables, a page per plot,
the appendix) into one file, written atomically in the report style with fixed metadata and no
creation date, so identical inputs give a byte-identical PDF.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from detrprune import __version__
from detrprune.jobs import atomic_output
from detrprune.report.pdf.answer import _answer_page
from detrprune.report.pdf.appendix import _appendix_lines, _text_page
from detrprune.report.pdf.layout import _PAGE_LANDSCAPE, REPORT_TITLE
from detrprune.report.pdf.tables import (
    _DETAIL_HEADERS,
    _DETAIL_NOTE,
    _ELASTICITY_HEADERS,
    _ELASTICITY_NOTE,
    _RECOVERY_HEADERS,
    _RECOVERY_NOTE,
    _SCRATCH_HEADERS,
    _SCRATCH_NOTE,
    _SEED_HEADERS,
    _SEED_NOTE,
    _SEMI_STRUCTURED_HEADERS,
    _SEMI_STRUCTURED_NOTE,
    _STEP_HEADERS,
    _STEP_NOTE,
    _SUMMARY_NOTE,
    _TABLE_HEADERS,
    _not_timed_note,
    _table_pages,
    elasticity_table,
    recovery_table,
    scratch_table,
    seed_table,
    semi_structured_table,
)
from detrprune.report.plots.style import report_style
from detrprune.report.summary import ReportError, check_steps, check_summary

log = logging.getLogger(__name__)


def write_report(
    summary: pd.DataFrame,
    plot_paths: Sequence[Path],
    config_summary: Mapping[str, object],
    out_pdf: Path,
    steps: pd.DataFrame | None = None,
    validations: pd.DataFrame | None = None,
) -> None:
    """Write the multi-page PDF report, byte-identical for identical inputs.

    Pages: the answer (:func:`_answer_page`: this run's answer in words beside the
    accuracy-vs-speed figure with its Pareto front), the recovery table (each model against its
    control of equal training, with intervals), each fine-tuned target against its scratch twins
    (:func:`scratch_table`; only when there are some), the summary table and the detail table (KITTI
    AP, GMACs by part, sparse sizes; split every 25 rows), the latency elasticity of each filter
    variant (:func:`elasticity_table`; only when there is one), the 2:4 variants' GPU timing
    (:func:`semi_structured_table`; only when there is one), the training-seed replicates
    (:func:`seed_table`; only when there are some), the iterative loop's step table when
    ``steps`` is given, one page per plot, then the appendix: the baseline, how to read the
    numbers and every recovery claim in words, the configuration and the reproduced study.

    Args:
        summary: the table returned by :func:`~detrprune.report.summary.aggregate`.
        plot_paths: PNGs of :func:`~detrprune.report.plots.make_plots`, a page each, in order.
        config_summary: nested dict (e.g. from
            :func:`~detrprune.report.pdf.appendix.summarize_config`), printed with dotted keys in
            the appendix.
        out_pdf: output path, written atomically.
        steps: the iterative loop's per-step table, when it ran.
        validations: the baseline's validations during training, when recorded.
    """
    check_summary(summary)
    if steps is not None:
        check_steps(steps)
    for plot in plot_paths:
        if not Path(plot).is_file():
            raise ReportError(f"{plot}: plot file not found (key 'plot_paths')")

    appendix = _appendix_lines(summary, config_summary, validations)
    metadata = {
        "CreationDate": None,
        "ModDate": None,
        "Producer": f"detrprune {__version__} (matplotlib {matplotlib.__version__})",
        "Creator": "detrprune",
        "Title": REPORT_TITLE,
    }
    with report_style(), atomic_output(Path(out_pdf)) as (tmp,):
        with PdfPages(tmp, metadata=metadata) as pdf:
            fig = _answer_page(summary, validations)
            pdf.savefig(fig)
            plt.close(fig)
            tables = _table_pages(
                recovery_table(summary), _RECOVERY_HEADERS, "Recovery table", _RECOVERY_NOTE
            )
            twins = scratch_table(summary)
            if not twins.empty:
                tables += _table_pages(
                    twins, _SCRATCH_HEADERS, "Prune, or train the small model?", _SCRATCH_NOTE
                )
            tables += _table_pages(summary, _TABLE_HEADERS, "Summary table", _SUMMARY_NOTE)
            tables += _table_pages(summary, _DETAIL_HEADERS, "Detail table", _DETAIL_NOTE)
            elastic = elasticity_table(summary)
            if elastic["kind"].eq("filter").any():  # no structured variant: nothing to show
                tables += _table_pages(
                    elastic,
                    _ELASTICITY_HEADERS,
                    "Latency elasticity per filter variant",
                    _ELASTICITY_NOTE,
                )
            two_four = semi_structured_table(summary)
            if not two_four.empty:
                tables += _table_pages(
                    two_four,
                    _SEMI_STRUCTURED_HEADERS,
                    "2:4 semi-structured sparsity on the GPU",
                    _SEMI_STRUCTURED_NOTE + _not_timed_note(two_four),
                )
            replicated = seed_table(summary)
            if not replicated.empty:
                tables += _table_pages(
                    replicated, _SEED_HEADERS, "Training-seed replicates", _SEED_NOTE
                )
            if steps is not None:
                tables += _table_pages(steps, _STEP_HEADERS, "Iterative steps", _STEP_NOTE)
            for fig in tables:
                pdf.savefig(fig)
                plt.close(fig)
            for plot in plot_paths:
                fig = _plot_page(Path(plot))
                pdf.savefig(fig)
                plt.close(fig)
            for lines in appendix:
                fig = _text_page(lines)
                pdf.savefig(fig)
                plt.close(fig)
    log.info("wrote %s", out_pdf)


def _plot_page(plot: Path) -> Figure:
    """A landscape page showing one plot PNG, titled with its file stem."""
    image = mpimg.imread(plot)
    fig = plt.figure(figsize=_PAGE_LANDSCAPE)
    ax = fig.add_axes((0.04, 0.04, 0.92, 0.86))
    # "none" embeds the PNG pixels unresampled instead of re-rasterising at the page dpi.
    ax.imshow(image, interpolation="none")
    ax.axis("off")
    ax.set_title(plot.stem, fontsize=14, weight="bold")
    return fig
