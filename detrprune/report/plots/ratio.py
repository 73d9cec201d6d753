"""The plots against the pruning ratio: mAP, GMACs, latency (CPU, and GPU where timed), and
checkpoint size with the non-zero parameters. Every figure has a column of panels per pruning
kind (:func:`~detrprune.report.plots.series.ratio_kinds`), whose x axis says what that kind's
ratio counts, with the baseline (and the fine-tuned models' control) as a reference line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from detrprune.report.plots.series import (
    _devices,
    _error_bars,
    _interval,
    _series,
    ratio_kinds,
    ratio_label,
)
from detrprune.report.plots.style import _FIGSIZE_PLOT, _linestyle, _series_label
from detrprune.variants import FINETUNED_BASELINE


def _ratio_panels(summary: pd.DataFrame, rows: int) -> tuple[Figure, np.ndarray, list[str]]:
    """A figure with ``rows`` rows of ratio panels, a column per :func:`ratio_kinds` entry.

    A row shares its y axis, so the kinds compare on one scale; their x axes stay apart.
    """
    kinds = ratio_kinds(summary)
    width = max(_FIGSIZE_PLOT[0], 5.5 * len(kinds))
    height = max(_FIGSIZE_PLOT[1], 4.5 * rows)
    fig, axes = plt.subplots(rows, len(kinds), figsize=(width, height), squeeze=False, sharey="row")
    return fig, axes, kinds


def _panel_title(what: str, kind: str) -> str:
    return f"{what}: {kind} pruning" if kind else what


def _plot_metric_vs_ratio(
    ax: Axes,
    summary: pd.DataFrame,
    column: str,
    colours: Mapping[str, Any],
    baseline: pd.Series | None,
    kind: str,
) -> None:
    """Draw ``column`` against the ratio of the ``kind`` variants: one line per series plus the
    baseline reference, the x axis labelled with what that kind's ratio is (:func:`ratio_label`).

    Where the table has the column's 95 % interval (``<column>_ci95_low/high``) every point
    gets it as an error bar and the baseline as a band; the fine-tuned models' control (the
    baseline fine-tuned on their schedule) is drawn as a dashed reference.
    """
    for method, finetuned, group in _series(summary, kind or None):
        ax.errorbar(
            group["ratio"],
            group[column],
            yerr=_error_bars(group, column),
            marker="o",
            capsize=3,
            linestyle=_linestyle(finetuned),
            color=colours[method],
            label=_series_label(method, finetuned),
        )
    if baseline is not None and not pd.isna(baseline[column]):
        value = float(baseline[column])
        ax.axhline(value, color="black", linestyle=":", linewidth=1.0, label="baseline")
        ax.plot([0], [value], marker="*", markersize=12, color="black", linestyle="none")
        band = _interval(baseline, column)
        if band is not None:
            ax.axhspan(*band, color="black", alpha=0.08, linewidth=0)
    # Training changes accuracy only: the control's cost equals the baseline's.
    control = summary[summary["variant"] == FINETUNED_BASELINE]
    if column in ("mAP", "mAP50") and not control.empty and not pd.isna(control[column].iloc[0]):
        ax.axhline(
            float(control[column].iloc[0]),
            color="black",
            linestyle="--",
            linewidth=1.0,
            label="baseline fine-tuned (control)",
        )
    ax.set_xlabel(ratio_label(kind))
    ax.legend(fontsize=8)


def _fig_map(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """mAP (top) and mAP50 (bottom) vs the ratio, a column per pruning kind."""
    fig, axes, kinds = _ratio_panels(summary, 2)
    for row, column, label in zip(axes, ("mAP", "mAP50"), ("mAP@[.5:.95]", "mAP@.5"), strict=True):
        for ax, kind in zip(row, kinds, strict=True):
            _plot_metric_vs_ratio(ax, summary, column, colours, baseline, kind)
            ax.set_ylabel(f"{label} (COCO AP, 0-1)")
            ax.set_title(_panel_title(label, kind))
    return fig


def _fig_gmacs(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """GMACs vs the ratio, a panel per pruning kind."""
    fig, axes, kinds = _ratio_panels(summary, 1)
    for ax, kind in zip(axes[0], kinds, strict=True):
        _plot_metric_vs_ratio(ax, summary, "gmacs", colours, baseline, kind)
        ax.set_ylabel("compute (GMACs, fvcore: 1 multiply-add = 1 MAC)")
        ax.set_title(_panel_title("GMACs", kind))
    return fig


def has_gpu_latency(summary: pd.DataFrame) -> bool:
    """Whether any variant was timed on a GPU (``gpu_latency_ms_median``)."""
    column = "gpu_latency_ms_median"
    return column in summary.columns and bool(summary[column].notna().any())


def _fig_latency(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Median CPU latency vs the ratio, a panel per pruning kind, with its 95 % interval (older
    summaries without one: an upper bar reaching the p90). Where variants were also timed on a
    GPU, a second row shows that median (CUDA events, no interval)."""
    gpu = has_gpu_latency(summary)
    fig, axes, kinds = _ratio_panels(summary, 2 if gpu else 1)
    with_interval = "latency_ms_ci95_low" in summary.columns
    for ax, kind in zip(axes[0], kinds, strict=True):
        if with_interval:
            _plot_metric_vs_ratio(ax, summary, "latency_ms_median", colours, baseline, kind)
            what = "CPU latency (median, bar: its 95 % interval)"
        else:
            _plot_latency_to_p90(ax, summary, colours, baseline, kind)
            what = "CPU latency (median, bar to p90)"
        ax.set_ylabel("CPU latency per image, batch 1 (ms)")
        ax.set_title(_panel_title(what, kind))
    if gpu:
        for ax, kind in zip(axes[1], kinds, strict=True):
            _plot_metric_vs_ratio(ax, summary, "gpu_latency_ms_median", colours, baseline, kind)
            ax.set_ylabel("GPU latency per image, batch 1 (ms)")
            ax.set_title(_panel_title("GPU latency (median, CUDA events)", kind))
    devices = f"CPU: {_devices(summary, 'latency_device')}"
    if gpu:
        devices += f"; GPU: {_devices(summary, 'gpu_latency_device')}"
    fig.suptitle(f"Latency per image ({devices})", fontsize=10)
    return fig


def _plot_latency_to_p90(
    ax: Axes,
    summary: pd.DataFrame,
    colours: Mapping[str, Any],
    baseline: pd.Series | None,
    kind: str,
) -> None:
    """The median latency of the ``kind`` variants with an upper bar reaching the p90: the
    spread older summaries (without a 95 % interval of the median) can show."""
    for method, finetuned, group in _series(summary, kind or None):
        median = group["latency_ms_median"].to_numpy(dtype=float)
        upper = np.clip(group["latency_ms_p90"].to_numpy(dtype=float) - median, 0.0, None)
        ax.errorbar(
            group["ratio"],
            median,
            yerr=[np.zeros_like(upper), upper],
            marker="o",
            capsize=3,
            linestyle=_linestyle(finetuned),
            color=colours[method],
            label=_series_label(method, finetuned),
        )
    if baseline is not None:
        b_med = float(baseline["latency_ms_median"])
        b_up = max(float(baseline["latency_ms_p90"]) - b_med, 0.0)
        ax.axhline(b_med, color="black", linestyle=":", linewidth=1.0, label="baseline")
        ax.errorbar(
            [0],
            [b_med],
            yerr=[[0.0], [b_up]],
            marker="*",
            markersize=12,
            capsize=3,
            color="black",
            linestyle="none",
        )
    ax.set_xlabel(ratio_label(kind))
    ax.legend(fontsize=8)


def _fig_size(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """Checkpoint size (top) and non-zero parameter fraction (bottom) vs the ratio, a column per
    pruning kind."""
    fig, axes, kinds = _ratio_panels(summary, 2)
    for ax, kind in zip(axes[0], kinds, strict=True):
        _plot_metric_vs_ratio(ax, summary, "checkpoint_mb", colours, baseline, kind)
        ax.set_ylabel("checkpoint size (MB)")
        ax.set_title(_panel_title("Checkpoint size", kind))

    frac = summary.copy()
    if baseline is not None and int(baseline["params_nonzero"]) > 0:
        denominator: Any = float(baseline["params_nonzero"])
        ylabel = "non-zero params (fraction of baseline)"
    else:
        # Without a baseline the best available reference is each variant's own size.
        denominator = frac["params_total"].astype(float)
        ylabel = "non-zero params (fraction of own total)"
    frac["nonzero_fraction"] = frac["params_nonzero"].astype(float) / denominator
    base_frac = frac.loc[baseline.name] if baseline is not None else None
    for ax, kind in zip(axes[1], kinds, strict=True):
        _plot_metric_vs_ratio(ax, frac, "nonzero_fraction", colours, base_frac, kind)
        ax.set_ylabel(ylabel)
        ax.set_title(_panel_title("Non-zero parameters", kind))
    return fig
