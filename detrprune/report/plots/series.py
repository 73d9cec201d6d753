"""What the plots read from the summary table: the pruned rows as one series per method and
training, what a ratio counts for each pruning kind (:func:`ratio_label`: channels removed for
filter pruning, weights zeroed for weight pruning), the 95 % interval columns as error bars, and
the devices the latency was timed on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from detrprune.report.summary import BASELINE_METHOD

# What a pruned variant's ratio means, by its kind (the metrics' ``kind``).
RATIO_LABELS: dict[str, str] = {
    "filter": "channels removed (%)",
    "weight": "weights zeroed, sparsity (%)",
}
# The same, as the short tag the trade-off's key gives a ratio of that kind.
_RATIO_TAGS: dict[str, str] = {"filter": "ch", "weight": "sp"}


def ratio_label(kind: str) -> str:
    """The label of a ratio axis for variants of ``kind`` ("" when the kind is unknown)."""
    if kind in RATIO_LABELS:
        return RATIO_LABELS[kind]
    return f"pruning ratio (%), {kind} pruning" if kind else "pruning ratio (%)"


def ratio_kinds(summary: pd.DataFrame) -> list[str]:
    """The kinds of the pruned (non-baseline) rows, one ratio panel each: filter, weight, then
    any other in name order; ``[""]`` (one unnamed panel) when there is no pruned row."""
    pruned = set(summary.loc[summary["method"] != BASELINE_METHOD, "kind"].astype(str))
    known = [kind for kind in RATIO_LABELS if kind in pruned]
    return known + sorted(pruned - set(known)) or [""]


def _series(summary: pd.DataFrame, kind: str | None = None) -> list[tuple[str, bool, pd.DataFrame]]:
    """Split non-baseline rows (of ``kind`` only, when given) into (method, finetuned) series,
    each sorted by ratio."""
    rows = summary[summary["method"] != BASELINE_METHOD]
    if kind is not None:
        rows = rows[rows["kind"].astype(str) == kind]
    out: list[tuple[str, bool, pd.DataFrame]] = []
    for (method, finetuned), group in rows.groupby(["method", "finetuned"], sort=True):
        out.append((str(method), bool(finetuned), group.sort_values("ratio")))
    return out


def _interval(row: pd.Series, column: str) -> tuple[float, float] | None:
    """A row's 95 % interval of ``column``, when the table has it."""
    low, high = f"{column}_ci95_low", f"{column}_ci95_high"
    if low not in row.index or pd.isna(row[low]) or pd.isna(row[high]):
        return None
    return float(row[low]), float(row[high])


def _error_bars(rows: pd.DataFrame, column: str) -> np.ndarray | None:
    """Matplotlib's (below, above) error lengths from the 95 % interval columns, or None."""
    low, high = f"{column}_ci95_low", f"{column}_ci95_high"
    if low not in rows.columns or high not in rows.columns:
        return None
    value = rows[column].to_numpy(dtype=float)
    below = value - rows[low].to_numpy(dtype=float)
    above = rows[high].to_numpy(dtype=float) - value
    # A percentile interval need not contain the full-set value; never draw a negative bar.
    return np.nan_to_num(np.clip(np.vstack([below, above]), 0.0, None))


def _devices(summary: pd.DataFrame, column: str) -> str:
    """The distinct devices named in ``column``, or "?" without it."""
    if column not in summary.columns:
        return "?"
    return ", ".join(sorted(summary[column].dropna().astype(str).unique())) or "?"
