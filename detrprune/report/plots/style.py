"""How every plot looks and is saved: matplotlib's fixed report style (independent of any user
matplotlibrc, TrueType fonts so the PDF's text stays extractable), the figure sizes, a colour per
pruning method with its line style and legend label, and the deterministic PNG writer (no
Software metadata, written atomically), so identical inputs give byte-identical plots.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from detrprune.jobs import atomic_output
from detrprune.report.summary import BASELINE_METHOD

PLOT_DPI = 120
_FIGSIZE_PLOT = (8.0, 5.0)
_FIGSIZE_WIDE = (11.0, 4.5)

# Fixed style, independent of any user matplotlibrc, so outputs do not vary between machines.
# Type 42 (TrueType) fonts keep the PDF text extractable; Type 3 glyphs are not.
_RC: dict[str, Any] = {
    "svg.hashsalt": "detrprune",
    "pdf.fonttype": 42,
    "pdf.compression": 6,
    "font.family": "DejaVu Sans",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": PLOT_DPI,
    "savefig.dpi": PLOT_DPI,
}


def report_style() -> ExitStack:
    """A context manager applying the fixed report style on top of matplotlib defaults."""
    stack = ExitStack()
    stack.enter_context(plt.style.context("default"))
    stack.enter_context(matplotlib.rc_context(_RC))
    return stack


def _save_png(fig: Figure, out: Path) -> None:
    """Save ``fig`` as a deterministic PNG (no Software/timestamp metadata), atomically."""
    with atomic_output(out) as (tmp,):
        fig.savefig(tmp, format="png", dpi=PLOT_DPI, metadata={"Software": None})


def _method_colours(summary: pd.DataFrame) -> dict[str, Any]:
    """Give each pruning method a fixed colour (fine-tuned twins share their method's colour)."""
    methods = sorted(m for m in summary["method"].unique() if m != BASELINE_METHOD)
    # tab10's ten colours while they suffice; tab20 (ten paler twins) for up to twenty.
    cmap = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _series_label(method: str, finetuned: bool) -> str:
    """Legend label of a series."""
    return f"{method} (fine-tuned)" if finetuned else method


def _linestyle(finetuned: bool) -> str:
    """Fine-tuned series are dashed so they read as twins of the solid one-shot series."""
    return "--" if finetuned else "-"
