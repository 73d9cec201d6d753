"""The report's findings in words, each one only as strong as its interval allows.

A change is called a gain or a drop only when the paired 95 % interval of the mAP difference to
the control of equal training excludes 0 (``significant``); otherwise the words are "no
significant difference", whatever the point estimate. A model with training-seed replicates
(:mod:`detrprune.report.seeds`) gets the same words for its mean difference over the seeds, whose
interval also covers the fine-tuning's own randomness.
"""

from __future__ import annotations

import pandas as pd

from detrprune.variants import is_control


def _verdict(delta: float, low: float, high: float) -> str:
    """The words for a difference and its interval."""
    if pd.isna(low) or pd.isna(high):
        return "not compared"
    if low <= 0 <= high:
        return "no significant difference"
    return "significant gain" if delta > 0 else "significant drop"


def _seed_line(row: pd.Series) -> list[str]:
    """The difference over training seeds, when the row has replicates."""
    if pd.isna(row.get("seeds", float("nan"))):
        return []
    mean, low, high = (row[f"delta_mAP_seed_{key}"] for key in ("mean", "ci95_low", "ci95_high"))
    return [
        f"  over {int(row['seeds'])} training seeds {mean:+.3f} [{low:+.3f}, {high:+.3f}]: "
        f"{_verdict(mean, low, high)}"
    ]


def findings(summary: pd.DataFrame) -> list[str]:
    """Two lines per fine-tuned model and control (the recovery claims), in table order: the
    share of the control's mAP kept, then the difference with its interval and the verdict; a
    third with the difference over training seeds where the row has seed replicates."""
    needed = {"control", "map_kept", "delta_mAP", "delta_mAP_ci95_low", "significant"}
    if not needed <= set(summary.columns):
        return ["(no comparisons with controls in this summary)"]
    rows = summary[summary["finetuned"].astype(bool) | summary["variant"].map(is_control)]
    rows = rows[rows["control"].fillna("").astype(str) != ""]
    lines = []
    for _, row in rows.iterrows():
        kept = "n/a" if pd.isna(row["map_kept"]) else f"{100 * row['map_kept']:.0f} %"
        lines += [
            f"{row['variant']}: {kept} of the mAP of {row['control']}",
            f"  difference {row['delta_mAP']:+.3f} [{row['delta_mAP_ci95_low']:+.3f}, "
            f"{row['delta_mAP_ci95_high']:+.3f}]: "
            f"{_verdict(row['delta_mAP'], row['delta_mAP_ci95_low'], row['delta_mAP_ci95_high'])}",
            *_seed_line(row),
        ]
    return lines or ["(no fine-tuned model has a control in this summary)"]
