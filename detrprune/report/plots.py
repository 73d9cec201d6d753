"""The study's plots: accuracy and cost against the pruning ratio, the accuracy / latency
trade-off, where the compute, the time and the zeros are by model part, and the iterative loop's
steps.

A ratio means one thing for filter pruning (the share of channels removed) and another for weight
pruning (the share of weights zeroed), so every plot against the ratio draws each kind on a panel
of its own, whose axis says which it is (:func:`ratio_label`).

Each figure is a deterministic PNG (fixed style, no Software metadata), written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

# The workflow runs headless (cluster nodes, CI): never let matplotlib look for a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.gridspec import SubplotSpec  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from detrprune.constants import GMACS_PARTS, LATENCY_PARTS, SPARSITY_PARTS  # noqa: E402
from detrprune.jobs import atomic_output  # noqa: E402
from detrprune.report import report_plots  # noqa: E402
from detrprune.report.convergence import judge_convergence  # noqa: E402
from detrprune.report.pareto import pareto_front  # noqa: E402
from detrprune.report.summary import (  # noqa: E402
    BASELINE_METHOD,
    baseline_row,
    check_steps,
    check_summary,
)
from detrprune.variants import FINETUNED_BASELINE  # noqa: E402

log = logging.getLogger(__name__)

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

# A figure from (summary table, colour per method, baseline row or None).
Builder = Callable[[pd.DataFrame, Mapping[str, Any], "pd.Series | None"], Figure]

# What a pruned variant's ratio means, by its kind (the metrics' ``kind``).
RATIO_LABELS: dict[str, str] = {
    "filter": "channels removed (%)",
    "weight": "weights zeroed, sparsity (%)",
}
# The same, as the short tag the trade-off's key gives a ratio of that kind.
_RATIO_TAGS: dict[str, str] = {"filter": "ch", "weight": "sp"}


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


def _devices(summary: pd.DataFrame, column: str) -> str:
    """The distinct devices named in ``column``, or "?" without it."""
    if column not in summary.columns:
        return "?"
    return ", ".join(sorted(summary[column].dropna().astype(str).unique())) or "?"


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


def _fig_accuracy_vs_latency(
    summary: pd.DataFrame, colours: Mapping[str, Any], baseline: pd.Series | None
) -> Figure:
    """mAP against the speedup over the baseline, every model a point with its 95 % intervals
    and the Pareto front joined, the key below the axes (:func:`draw_tradeoff`)."""
    key = _key_height(_key_rows(_tradeoff_key(summary, colours, _front(summary, baseline)), 6))
    fig = plt.figure(figsize=(11.0, 5.5 + _XLABEL_ROOM + key))
    draw_tradeoff(fig, fig.add_gridspec(1, 1)[0], summary, colours, baseline, max_columns=6)
    return fig


# A point's colour names its method, its shape its ratio and its fill its training; the
# baseline and its fine-tuned controls are black, a shape each.
_RATIO_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "p", "h", "<", ">", "d", "H", "8")
_REFERENCE_MARKERS = ("*", "D", "X", "P", "p", "h", "H", "8")
_KEY_FONTSIZE = 7.0
_XLABEL_ROOM = 0.6  # inches between the trade-off's axes and its key, for the x labels


@dataclass(frozen=True)
class SpeedAxis:
    """The trade-off's x axis: the column drawn, its interval columns and which way is better."""

    column: str
    low: str | None
    high: str | None
    label: str
    maximize: bool


def speed_axis(summary: pd.DataFrame, baseline: pd.Series | None) -> tuple[pd.DataFrame, SpeedAxis]:
    """The summary with the trade-off's x column, and how to read it.

    The speedup over the baseline with its paired interval where the summary has it; else the
    baseline's median latency over each model's (no interval); without a baseline, the median
    latency itself (lower is better).
    """
    device = _devices(summary, "latency_device")
    if "speedup" in summary.columns and summary["speedup"].notna().any():
        return summary, SpeedAxis(
            "speedup",
            "speedup_ci95_low",
            "speedup_ci95_high",
            f"speedup over the baseline (its median latency / the model's), {device}",
            True,
        )
    if baseline is not None and float(baseline["latency_ms_median"]) > 0:
        table = summary.copy()
        table["speedup"] = float(baseline["latency_ms_median"]) / table["latency_ms_median"]
        return table, SpeedAxis(
            "speedup",
            None,
            None,
            f"speedup over the baseline (its median latency / the model's; no interval), {device}",
            True,
        )
    return summary, SpeedAxis(
        "latency_ms_median",
        "latency_ms_ci95_low",
        "latency_ms_ci95_high",
        f"median latency per image, batch 1 (ms), {device}",
        False,
    )


def _plotted(summary: pd.DataFrame, baseline: pd.Series | None) -> tuple[pd.DataFrame, SpeedAxis]:
    """The rows the trade-off draws (both coordinates known), with its x axis."""
    table, axis = speed_axis(summary, baseline)
    known = table[axis.column].notna() & table["mAP"].notna()
    return table[known], axis


def _front(summary: pd.DataFrame, baseline: pd.Series | None) -> pd.DataFrame:
    """The trade-off's Pareto front: the models no other beats on both mAP and speed."""
    rows, axis = _plotted(summary, baseline)
    return pareto_front(rows, axis.column, "mAP", maximize_x=axis.maximize)


def _point_style(summary: pd.DataFrame, colours: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each variant's marker, colour and fill in the trade-off (see ``_RATIO_MARKERS``)."""
    ratios = sorted(set(summary.loc[summary["method"] != BASELINE_METHOD, "ratio"].astype(int)))
    shape = {ratio: _RATIO_MARKERS[i % len(_RATIO_MARKERS)] for i, ratio in enumerate(ratios)}
    styles: dict[str, dict[str, Any]] = {}
    references = 0
    for _, row in summary.iterrows():
        if row["method"] == BASELINE_METHOD:
            marker = _REFERENCE_MARKERS[references % len(_REFERENCE_MARKERS)]
            references += 1
            styles[row["variant"]] = {"marker": marker, "color": "black", "filled": True}
        else:
            styles[row["variant"]] = {
                "marker": shape[int(row["ratio"])],
                "color": colours[row["method"]],
                "filled": bool(row["finetuned"]),
            }
    return styles


def _marker(style: Mapping[str, Any], label: str = "") -> Line2D:
    """A legend handle drawn as the points of ``style`` are."""
    big = style["marker"] == "*"
    return Line2D(
        [],
        [],
        linestyle="none",
        marker=style["marker"],
        markersize=11 if big else 6,
        color=style["color"],
        markerfacecolor=style["color"] if style["filled"] else "white",
        markeredgecolor="gold" if big else style["color"],
        label=label,
    )


def _tradeoff_key(
    summary: pd.DataFrame, colours: Mapping[str, Any], front: pd.DataFrame
) -> list[tuple[str, list[Line2D]]]:
    """The trade-off's key as (section title, entries): colour = method, shape = ratio, fill =
    training, then the front's models by name."""
    styles = _point_style(summary, colours)
    grey = {"color": "dimgrey", "filled": True}
    methods = [
        _marker({"marker": "o", "color": colours[m], "filled": True}, m)
        for m in sorted(m for m in summary["method"].unique() if m != BASELINE_METHOD)
    ]
    references = summary.loc[summary["method"] == BASELINE_METHOD, "variant"]
    methods += [_marker(styles[v], v) for v in references]
    pruned = summary[summary["method"] != BASELINE_METHOD]
    ratios = []
    for ratio in sorted(set(pruned["ratio"].astype(int))):
        at = pruned[pruned["ratio"] == ratio]
        kinds = sorted(set(at["kind"].astype(str)))
        # What the ratio counts, for each kind pruned that far ("10 % ch/sp").
        tags = [_RATIO_TAGS[kind] for kind in kinds if kind in _RATIO_TAGS]
        label = f"{ratio} % {'/'.join(tags)}".strip()
        marker = styles[at["variant"].iloc[0]]["marker"]
        ratios.append(_marker({**grey, "marker": marker}, label))
    if ratios:
        present = set(pruned["kind"].astype(str))
        ratios += [
            _blank(f"{tag} = {RATIO_LABELS[kind]}")
            for kind, tag in _RATIO_TAGS.items()
            if kind in present
        ]
    rest = [
        _marker({**grey, "marker": "o"}, "fine-tuned (filled)"),
        _marker({**grey, "marker": "o", "filled": False}, "zero-shot (hollow)"),
        Line2D([], [], color="black", linewidth=1.2, label="Pareto front"),
        Line2D([], [], color="grey", linestyle=":", linewidth=1.0, label="speedup 1 (none)"),
    ]
    on_front = [_marker(styles[v], v) for v in front["variant"]]
    sections = [("colour: method", methods)]
    if ratios:
        sections.append(("shape: ratio", ratios))
    sections.append(("fill, lines", rest))
    if on_front:
        sections.append(("on the Pareto front", on_front))
    return sections


def _blank(label: str = " ") -> Line2D:
    """A key entry without a mark: padding, a title or a note."""
    return Line2D([], [], linestyle="none", marker="", label=label)


def _key_columns(sections: list[tuple[str, list[Line2D]]], rows: int) -> list[list[Line2D]]:
    """The key's columns of ``rows`` entries: each section starts a column under its title and
    continues in the next ones; short columns are padded with blanks."""
    columns: list[list[Line2D]] = []
    for title, entries in sections:
        for start in range(0, max(len(entries), 1), rows - 1):
            head = _blank(title if start == 0 else " ")
            column = [head, *entries[start : start + rows - 1]]
            columns.append(column + [_blank() for _ in range(rows - len(column))])
    return columns


def _key_rows(sections: list[tuple[str, list[Line2D]]], max_columns: int) -> int:
    """The fewest rows per column that fit the key into ``max_columns`` columns."""
    rows = 3
    while len(_key_columns(sections, rows)) > max_columns:
        rows += 1
    return rows


def _key_height(rows: int, fontsize: float = _KEY_FONTSIZE) -> float:
    """The height in inches the key of ``rows`` rows needs."""
    return rows * fontsize * 1.5 / 72 + 0.1


def tradeoff_zoom(summary: pd.DataFrame, baseline: pd.Series | None) -> tuple[float, float] | None:
    """The mAP range of the trade-off's zoomed panel: from the lowest interval end of the front
    and of the baseline and its controls to the top of every interval, padded; None when that is
    not under 60 % of the whole range (one panel shows it well enough)."""
    rows, axis = _plotted(summary, baseline)
    if rows.empty:
        return None
    front = pareto_front(rows, axis.column, "mAP", maximize_x=axis.maximize)
    low = rows["mAP_ci95_low"] if "mAP_ci95_low" in rows else rows["mAP"]
    high = rows["mAP_ci95_high"] if "mAP_ci95_high" in rows else rows["mAP"]
    low, high = low.fillna(rows["mAP"]), high.fillna(rows["mAP"])
    near = front.index.union(rows.index[rows["method"] == BASELINE_METHOD])
    bottom, top = float(low[near].min()), float(high.max())
    whole = top - float(low.min())
    if whole <= 0 or top - bottom >= 0.6 * whole:
        return None
    pad = 0.06 * (top - bottom)
    return bottom - pad, top + pad


def _draw_points(
    ax: Axes,
    rows: pd.DataFrame,
    axis: SpeedAxis,
    styles: Mapping[str, Mapping[str, Any]],
    front: pd.DataFrame,
    scale: float,
) -> None:
    """The trade-off's points (gid = variant) with their intervals, the front joined and ringed."""
    if axis.column == "speedup":
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1.0, zorder=1)
    ax.plot(front[axis.column], front["mAP"], color="black", linewidth=1.2, alpha=0.7, zorder=2)
    ax.scatter(
        front[axis.column],
        front["mAP"],
        s=170 * scale**2,
        facecolors="none",
        edgecolors="black",
        linewidths=0.8,
        zorder=2,
    )
    for _, row in rows.iterrows():
        style = styles[row["variant"]]
        handle = _marker(style)
        frame = rows.loc[[row.name]]
        container = ax.errorbar(
            frame[axis.column],
            frame["mAP"],
            xerr=_error_bars(frame, axis.column) if axis.low else None,
            yerr=_error_bars(frame, "mAP"),
            linestyle="none",
            marker=handle.get_marker(),
            markersize=handle.get_markersize() * scale,
            color=style["color"],
            markerfacecolor=handle.get_markerfacecolor(),
            markeredgecolor=handle.get_markeredgecolor(),
            ecolor=style["color"],
            elinewidth=0.6,
            alpha=0.9,
            # The references under the variants: a variant beside the baseline stays visible.
            zorder=2.5 if row["method"] == BASELINE_METHOD else 3,
        )
        container.lines[0].set_gid(row["variant"])
        for bars in container.lines[2]:
            bars.set_alpha(0.45)
    if not axis.maximize:
        ax.invert_xaxis()  # better to the right, as for a speedup


def draw_tradeoff(
    fig: Figure,
    spec: SubplotSpec,
    summary: pd.DataFrame,
    colours: Mapping[str, Any] | None = None,
    baseline: pd.Series | None = None,
    *,
    max_columns: int = 6,
    fontsize: float = _KEY_FONTSIZE,
) -> pd.DataFrame:
    """Draw mAP against speed in ``spec`` of ``fig``: the plot, and its key in axes of its own
    below (turned off), so that the key covers no point.

    Every model with both numbers is a point (gid = its variant) with its 95 % intervals as bars:
    colour = method, shape = ratio, filled = fine-tuned, hollow = zero-shot; the baseline and
    its controls in black. The Pareto front (:func:`~detrprune.report.pareto.pareto_front` on
    the point estimates) is joined by a black line and each of its points ringed. Where the
    front and the controls sit in a narrow band of mAP (:func:`tradeoff_zoom`) the main panel
    shows that band and a narrow panel beside it every model. The key names the methods, the
    ratios and the front's models in as few rows as ``max_columns`` columns allow, adding rows
    while it is wider than the figure.

    Returns:
        The front's rows, in the order they are joined.
    """
    if colours is None:
        colours = _method_colours(summary)
    rows, axis = _plotted(summary, baseline)
    front = pareto_front(rows, axis.column, "mAP", maximize_x=axis.maximize)
    styles = _point_style(summary, colours)
    sections = _tradeoff_key(summary, colours, front)
    height = spec.get_position(fig).height * fig.get_figheight()
    key = _key_height(_key_rows(sections, max_columns), fontsize)
    zoom = tradeoff_zoom(summary, baseline)
    # Rows: the plot, room for its x labels, the key.
    grid = spec.subgridspec(
        3,
        2 if zoom else 1,
        height_ratios=[max(height - key - _XLABEL_ROOM, 1.0), _XLABEL_ROOM, key],
        width_ratios=[2.6, 1] if zoom else None,
        hspace=0.0,
        wspace=0.18,
    )
    main = fig.add_subplot(grid[0, 0])
    _draw_points(main, rows, axis, styles, front, 1.0)
    main.set_xlabel(axis.label, fontsize=8)
    main.set_ylabel("mAP@[.5:.95] (COCO AP, 0-1)")
    what = f"mAP vs speed of {len(rows)} models, Pareto front joined (bars: 95 % intervals)"
    if zoom:
        main.set_ylim(*zoom)
        what = what.replace(f"of {len(rows)} models", f"near the front (mAP {zoom[0]:.2f}+)")
        whole = fig.add_subplot(grid[0, 1], sharex=main)
        _draw_points(whole, rows, axis, styles, front, 0.6)
        whole.axhspan(*zoom, color="grey", alpha=0.12, linewidth=0, zorder=0)
        whole.set_title(f"all {len(rows)} models (shaded: left panel)", fontsize=8)
        whole.tick_params(labelsize=7)
        whole.set_xlabel(axis.column.replace("_", " "), fontsize=7)
    main.set_title(what, fontsize=9)
    if axis.column == "speedup" and baseline is not None and axis.low is not None:
        reference = float(baseline["latency_ms_median"])
        if reference > 0:

            def to_ms(speedup: np.ndarray) -> np.ndarray:
                speedup = np.asarray(speedup, dtype=float)
                return reference / np.where(speedup > 0, speedup, np.nan)

            top = main.secondary_xaxis("top", functions=(to_ms, to_ms))
            top.set_xlabel("median latency per image (ms)", fontsize=7)
            top.tick_params(labelsize=7)
    key_ax = fig.add_subplot(grid[2, :])
    key_ax.axis("off")
    _place_key(key_ax, sections, max_columns, fontsize)
    return front


def _place_key(
    key_ax: Axes, sections: list[tuple[str, list[Line2D]]], max_columns: int, fontsize: float
) -> Legend:
    """The key as one legend at the top of ``key_ax``, rows added until it fits its width."""
    fig = key_ax.figure
    renderer = fig.canvas.get_renderer()
    width = fig.get_window_extent(renderer).width
    rows = _key_rows(sections, max_columns)
    while True:
        columns = _key_columns(sections, rows)
        handles = [entry for column in columns for entry in column]
        legend = key_ax.legend(
            handles=handles,
            labels=[h.get_label() for h in handles],
            loc="upper center",
            bbox_to_anchor=(0.5, 1.0),
            ncols=len(columns),
            fontsize=fontsize,
            frameon=False,
            handlelength=1.2,
            handletextpad=0.4,
            columnspacing=1.2,
            borderaxespad=0.0,
        )
        titles = {title for title, _ in sections}
        for text in legend.get_texts():
            if text.get_text() in titles:
                text.set_weight("bold")
        if legend.get_window_extent(renderer).width <= 0.98 * width or len(columns) <= 2:
            return legend
        legend.remove()
        rows += 1


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


def _iterative_kind(summary: pd.DataFrame) -> str:
    """The pruning kind of the iterative loop's rows ("" where the summary has none)."""
    kinds = summary.loc[summary["method"] == "iterative", "kind"].astype(str).unique()
    return str(kinds[0]) if len(kinds) == 1 else ""


def _fig_iterative(steps: pd.DataFrame, baseline: pd.Series | None, kind: str = "") -> Figure:
    """mAP before/after each step's fine-tune (left axis) and GMACs (right axis) vs step, each
    step's tick naming the cumulative ratio as what it counts for the loop's ``kind``."""
    fig, ax = plt.subplots(figsize=_FIGSIZE_PLOT)
    step = steps["step"].to_numpy()
    ax.plot(step, steps["mAP_before_finetune"], marker="o", color="tab:red", label="mAP pruned")
    ax.plot(step, steps["mAP_after_finetune"], marker="o", color="tab:blue", label="mAP fine-tuned")
    if baseline is not None:
        ax.axhline(float(baseline["mAP"]), color="black", linestyle=":", label="baseline mAP")
    selected = steps[steps["selected"].astype(str).str.lower() == "true"]
    if not selected.empty:
        ax.plot(
            selected["step"],
            selected["mAP_after_finetune"],
            marker="*",
            markersize=16,
            color="tab:blue",
            linestyle="none",
            label="kept",
        )
    counted = ratio_label(kind).removesuffix(" (%)")
    ax.set_xlabel(f"step (cumulative {counted}, %)")
    ratios = steps["cumulative_ratio"].to_numpy(dtype=float)
    ax.set_xticks(step, [f"{s}\n({100 * r:.0f} %)" for s, r in zip(step, ratios, strict=True)])
    ax.set_ylabel("mAP@[.5:.95]")
    macs = ax.twinx()
    macs.plot(step, steps["gmacs"], marker="s", color="tab:green", label="GMACs")
    macs.set_ylabel("GMACs", color="tab:green")
    macs.grid(False)
    handles = ax.get_legend_handles_labels()[0] + macs.get_legend_handles_labels()[0]
    ax.legend(handles=handles, fontsize=8, loc="lower left")
    ax.set_title("Iterative prune / fine-tune")
    return fig


def _fig_training(validations: pd.DataFrame) -> Figure:
    """The baseline's validation mAP50 and mAP over its training, the last fifth shaded."""
    verdict = judge_convergence(validations)
    fig, ax = plt.subplots(figsize=_FIGSIZE_PLOT)
    iters = validations["iter"].to_numpy()
    ax.plot(iters, validations["mAP50"], marker="o", color="tab:blue", label="mAP@.5")
    ax.plot(iters, validations["mAP"], marker="s", color="tab:red", label="mAP@[.5:.95]")
    if verdict.final_iter > 0:
        ax.axvspan(
            verdict.window_start,
            verdict.final_iter,
            color="grey",
            alpha=0.15,
            label="window the convergence is judged on",
        )
    ax.set_xlabel("training iteration")
    ax.set_ylabel("validation AP (COCO, 0-1)")
    ax.set_title(f"Baseline training: {verdict.sentence().split(':')[0]}")
    ax.legend(fontsize=8, loc="lower right")
    return fig
