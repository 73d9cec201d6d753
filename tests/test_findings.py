"""The report's findings in words (detrprune.report.findings)."""

from __future__ import annotations

import math

import pandas as pd

from detrprune.report.findings import findings


def row(variant: str, finetuned: bool, control: str, delta: float, low: float, high: float):
    return {
        "variant": variant,
        "finetuned": finetuned,
        "control": control,
        "map_kept": 0.9,
        "delta_mAP": delta,
        "delta_mAP_ci95_low": low,
        "delta_mAP_ci95_high": high,
        "significant": None if math.isnan(low) else (low > 0 or high < 0),
    }


def test_only_an_interval_that_excludes_zero_makes_a_gain_or_a_drop():
    nan = math.nan
    summary = pd.DataFrame(
        [
            {**row("baseline", False, "", nan, nan, nan), "map_kept": nan},
            row("prune/filter/r50", False, "baseline", -0.3, -0.35, -0.25),  # zero-shot: left out
            row("finetune/baseline", True, "baseline", 0.05, 0.02, 0.08),
            row("finetune/filter/r50", True, "finetune/baseline", -0.04, -0.07, -0.01),
            row("finetune/weight/r30", True, "finetune/baseline", 0.03, -0.01, 0.06),
            row("iterative", True, "control/iterative", -0.02, nan, nan),
        ]
    )
    lines = findings(summary)
    assert [line.split(":")[0] for line in lines[::2]] == [
        "finetune/baseline",
        "finetune/filter/r50",
        "finetune/weight/r30",
        "iterative",
    ]
    assert lines[1].endswith("significant gain")
    assert lines[3] == "  difference -0.040 [-0.070, -0.010]: significant drop"
    # A positive point estimate whose interval includes 0 is not a gain.
    assert lines[5].endswith("no significant difference")
    assert lines[6] == "iterative: 90 % of the mAP of control/iterative"
    assert lines[7].endswith("not compared")


def test_a_summary_without_comparisons_says_so():
    assert findings(pd.DataFrame({"variant": ["baseline"]})) == [
        "(no comparisons with controls in this summary)"
    ]
