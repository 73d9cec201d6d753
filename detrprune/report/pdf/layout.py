"""What every page of the PDF report shares: its title, the study it reproduces, the A4 page
sizes, how a number is printed in a table or a line of text (:func:`_fmt`), and monospace lines
with bold headings (:func:`_monospace`), drawn before any axes so the text extracts in order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

REPORT_TITLE = "Pruning Deformable DETR on KITTI"
# The study this workflow reproduces (as CITATION.cff names it).
REPRODUCED_STUDY = (
    'Reproduces "Pruning Deformable DETR on KITTI" by Bohra, Shashidhar, Royce, Ungarala and '
    "Shahbas V S",
    "(https://github.com/ebcoders/Road-Object-Detection).",
)

_PAGE_PORTRAIT = (8.27, 11.69)  # A4
_PAGE_LANDSCAPE = (11.69, 8.27)


def _fmt(value: object, digits: int = 4) -> str:
    """Format a table / text value: ``digits`` significant digits, SI suffix for big integers."""
    if value is None or value is pd.NA:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        magnitude = abs(int(value))
        if magnitude >= 1_000_000_000:
            return f"{value / 1e9:.{digits}g}G"
        if magnitude >= 1_000_000:
            return f"{value / 1e6:.{digits}g}M"
        if magnitude >= 10_000:
            return f"{value / 1e3:.{digits}g}k"
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}g}"
    return str(value)


def _monospace(fig: Figure, lines: Sequence[str], top: float, step: float, size: float) -> None:
    """``lines`` in monospace from ``top`` down, ``step`` apart (page fractions); the unindented
    non-empty lines are headings, in bold and a little larger."""
    for i, line in enumerate(lines):
        heading = bool(line) and not line.startswith(" ")
        fig.text(
            0.05 if size < 8 else 0.08,
            top - i * step,
            line,
            va="top",
            fontsize=size + 1.5 if heading else size,
            weight="bold" if heading else "normal",
            family="DejaVu Sans Mono",
            zorder=-1,  # drawn, and so extracted, before any axes on the page
        )
