"""The plots by model part: stacked GMACs and stacked CPU latency per part of every structurally
different variant (where filter pruning removed work, and where the time goes), and the sparsity
each weight-pruned variant reached per part.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from detrprune.constants import GMACS_PARTS, LATENCY_PARTS, SPARSITY_PARTS
from detrprune.report.plots.series import _error_bars


def _bar_labels(rows: pd.DataFrame) -> list[str]:
    return [str(v).replace("/r", " r") for v in rows["variant"]]


def _no_data(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _structural_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """The baseline, the zero-shot variants of other kinds than weight pruning and the
    iterative result: the variants whose dense model differs, in the summary's order.

    Weight pruning and fine-tuning leave the dense model's shapes unchanged (zeros are still
    multiplied on a dense CPU), so their compute and their time by part are the baseline's.
    """
    structural = summary["kind"] != "weight"
    return summary[
        structural & (~summary["finetuned"].astype(bool) | (summary["method"] == "iterative"))
    ]


def _stack_bars(ax: Axes, rows: pd.DataFrame, parts: tuple[str, ...], prefix: str) -> None:
    """Stack ``<prefix><part>`` of ``rows`` as bars, parts bottom-up in the order given, one
    fixed colour per position (so GMACs' and latency's parts match)."""
    positions = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    cmap = plt.get_cmap("tab10")
    for i, part in enumerate(parts):
        values = rows[f"{prefix}{part}"].fillna(0.0).to_numpy(dtype=float)
        ax.bar(positions, values, bottom=bottom, color=cmap(i), label=part)
        bottom += values
    ax.set_xticks(positions, _bar_labels(rows), rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("variant (rNN: NN % of channels removed)")


def _legend_room(ax: Axes) -> None:
    """Raise the y limit a sixth so the legend sits above the tallest stack, not on it."""
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + (high - low) / 6)


def _fig_gmacs_by_part(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Stacked GMACs per model part for every structurally different variant
    (:func:`_structural_rows`): where filter pruning removed work, and where it did not."""
    fig, ax = plt.subplots(figsize=(11.0, 5.5))
    columns = [f"gmacs_{part}" for part in GMACS_PARTS]
    rows = _structural_rows(summary)
    if any(c not in rows.columns for c in columns) or rows.empty:
        _no_data(ax, "no per-part GMACs in the metrics")
        return fig
    _stack_bars(ax, rows, GMACS_PARTS, "gmacs_")
    ax.set_ylabel("GMACs (fvcore, 1 multiply-add = 1 MAC)")
    ax.set_title("Where the compute is: GMACs by model part")
    _legend_room(ax)
    ax.legend(fontsize=8, ncols=3)
    return fig


def _fig_latency_by_part(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Stacked CPU latency per model part (``latency_ms_<part>``, each part's median over the
    timed runs) of the variants of :func:`_fig_gmacs_by_part`, in its order: where the time
    goes beside where the compute is. The median total and its 95 % interval are drawn over
    each stack (the medians of the parts need not add up to the median of the totals)."""
    fig, ax = plt.subplots(figsize=(11.0, 5.5))
    columns = [f"latency_ms_{part}" for part in LATENCY_PARTS]
    rows = _structural_rows(summary)
    if any(c not in rows.columns for c in columns) or rows[columns].isna().all().all():
        _no_data(ax, "no per-part latency in the metrics")
        return fig
    _stack_bars(ax, rows, LATENCY_PARTS, "latency_ms_")
    ax.errorbar(
        np.arange(len(rows)),
        rows["latency_ms_median"].to_numpy(dtype=float),
        yerr=_error_bars(rows, "latency_ms_median"),
        marker="_",
        markersize=14,
        capsize=4,
        color="black",
        linestyle="none",
        label="median total (bar: 95 % interval)",
    )
    ax.set_ylabel("CPU latency per image, batch 1 (ms; median per part)")
    ax.set_title("Where the time goes: CPU latency by model part")
    _legend_room(ax)
    ax.legend(fontsize=8, ncols=4)
    return fig


def _fig_sparsity_by_part(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Achieved sparsity per model part of every weight-pruned variant (grouped bars)."""
    fig, ax = plt.subplots(figsize=(11.0, 5.5))
    columns = [f"sparsity_{part}" for part in SPARSITY_PARTS if f"sparsity_{part}" in summary]
    rows = summary[summary["kind"] == "weight"]
    if rows.empty or not columns:
        _no_data(ax, "no weight-pruned variant")
        return fig
    width = 0.8 / len(columns)
    positions = np.arange(len(rows))
    cmap = plt.get_cmap("tab10")
    for i, column in enumerate(columns):
        ax.bar(
            positions + (i - (len(columns) - 1) / 2) * width,
            rows[column].fillna(0.0).to_numpy(dtype=float),
            width=width,
            color=cmap(i),
            label=column.removeprefix("sparsity_"),
        )
    ax.set_xticks(positions, _bar_labels(rows), rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("variant (rNN: NN % of weights zeroed)")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fraction of zero weights (Conv/Linear)")
    ax.set_title("Achieved sparsity per model part (weight pruning)")
    ax.legend(fontsize=8, ncols=4)
    return fig
