"""The plots over training: the baseline's validation mAP over its iterations with the window
its convergence is judged on (:func:`~detrprune.report.convergence.judge_convergence`), and the
iterative prune / fine-tune loop's mAP and GMACs step by step.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from detrprune.report.convergence import judge_convergence
from detrprune.report.plots.series import ratio_label
from detrprune.report.plots.style import _FIGSIZE_PLOT


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
