"""The accuracy / speed trade-off: mAP against the speedup over the baseline (or the latency),
every model a point with its 95 % intervals, the Pareto front joined, a narrow panel of every
model beside a zoom on the front where it sits in a small band of mAP, and the key in axes of
its own below the plot. :func:`draw_tradeoff` draws it into part of any figure, so the PDF's
first page reuses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.gridspec import SubplotSpec
from matplotlib.legend import Legend
from matplotlib.lines import Line2D

from detrprune.report.pareto import pareto_front
from detrprune.report.plots.series import _RATIO_TAGS, RATIO_LABELS, _devices, _error_bars
from detrprune.report.plots.style import _method_colours
from detrprune.report.summary import BASELINE_METHOD


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
