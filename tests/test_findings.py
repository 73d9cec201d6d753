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


# --------------------------------------------------------------------------------------------
# the answer on the report's first page
# --------------------------------------------------------------------------------------------

DEVICE = "cpu (AMD EPYC, 2 threads)"


def model(
    variant: str,
    ratio: int,
    finetuned: bool,
    delta: float,
    low: float,
    high: float,
    speedup: float = 1.0,
    speed_low: float = 0.9,
    speed_high: float = 1.1,
    *,
    kind: str = "filter",
    kept: float = 0.95,
    nonzero: float = 1.0,
) -> dict:
    """A summary row: ``variant`` is ``<prefix>/<method>/r<ratio>``; sizes against 1000 params."""
    method = variant.split("/")[1] if "/" in variant else variant
    control = "finetune/baseline" if finetuned else "baseline"
    return {
        "variant": variant,
        "method": method,
        "kind": kind,
        "ratio": ratio,
        "finetuned": finetuned,
        "mAP": 0.4 + delta,
        "control": control,
        "map_kept": kept,
        "delta_mAP": delta,
        "delta_mAP_ci95_low": low,
        "delta_mAP_ci95_high": high,
        "significant": low > 0 or high < 0,
        "latency_ms_median": 100.0 / speedup,
        "speedup": speedup,
        "speedup_ci95_low": speed_low,
        "speedup_ci95_high": speed_high,
        "params_total": 1000 if kind == "weight" else int(1000 * (1 - ratio / 100)),
        "params_nonzero": int(1000 * nonzero * (1 - ratio / 100 if kind != "weight" else 1)),
        "params_fraction": 1.0 if kind == "weight" else 1 - ratio / 100,
        "checkpoint_mb": 10.0 * (1 - ratio / 100 if kind != "weight" else 1),
        "sparse_mb": 10.0 * nonzero,
        "latency_device": DEVICE,
    }


def study() -> pd.DataFrame:
    nan = math.nan
    base = {
        **model("baseline", 0, False, nan, nan, nan, kind="baseline"),
        "method": "baseline",
        "mAP": 0.4,
        "control": "",
        "map_kept": nan,
        "speedup": 1.0,
        "speedup_ci95_low": 1.0,
        "speedup_ci95_high": 1.0,
    }
    return pd.DataFrame(
        [
            base,
            # Fine-tuned filter pruning: no drop at 10 and 30 %, a drop at 50 %.
            model("finetune/filter/r10", 10, True, 0.01, -0.01, 0.03, 1.05, 0.95, 1.15),
            model("finetune/filter/r30", 30, True, -0.01, -0.03, 0.01, 1.3, 1.1, 1.5),
            model("finetune/filter/r50", 50, True, -0.05, -0.07, -0.03, 1.8, 1.6, 2.0),
            # Zero-shot: a drop at every ratio.
            model("prune/filter/r10", 10, False, -0.02, -0.03, -0.01, 1.05, 0.95, 1.15),
            model("prune/filter/r50", 50, False, -0.3, -0.33, -0.27, 1.8, 1.6, 2.0, kept=0.25),
            # Weight pruning: no drop, no speedup (the interval contains 1).
            model(
                "finetune/weight/r50",
                50,
                True,
                0.0,
                -0.02,
                0.02,
                0.98,
                0.9,
                1.06,
                kind="weight",
                nonzero=0.5,
            ),
        ]
    )


def test_the_answer_gives_each_methods_furthest_ratio_with_no_significant_drop():
    from detrprune.report.findings import answer

    summary = study()
    lines = answer(summary, summary.iloc[0])
    text = "\n".join(lines)
    assert lines[0] == "This run"
    assert f"timed on {DEVICE}" in lines[1]
    assert lines[2].startswith("  Baseline: mAP 0.400, 100.0 ms")
    rows = {" ".join(line.split()[:2]): " ".join(line.split()) for line in lines}
    # The highest ratio with no significant drop, with its interval, speed and size.
    assert rows["filter ft"] == (
        "filter ft 30 % -0.010 [-0.030, +0.010] 1.30x [1.10, 1.50] faster 70 % params, 7.0 MB"
    )
    # Every ratio dropped: the lowest ratio's numbers, saying so.
    assert rows["filter 0-shot"].startswith("filter 0-shot none (10 %) -0.020 [-0.030, -0.010]")
    # No drop at the only ratio tested; a speedup whose interval contains 1 is none.
    assert rows["weight ft"] == (
        "weight ft 50 % (max) +0.000 [-0.020, +0.020] 0.98x [0.90, 1.06] n.s. "
        "50 % non-zero, 5.0 MB sparse"
    )
    assert "fastest finetune/filter/r30, 1.30x [1.10, 1.50] faster;" in text
    assert "none of them significantly faster than the baseline;" in text
    assert "smallest finetune/weight/r50, 50 % non-zero, 5.0 MB sparse." in text
    # Collapsed: under half of the control's mAP, with a significant drop.
    collapsed = lines.index(next(line for line in lines if line.startswith("Collapsed")))
    assert lines[collapsed + 1] == "  prune/filter/r50 (0.100)"
    assert "goal" not in text.lower()
    assert max(map(len, lines)) <= 125  # fits the first page


def test_without_intervals_the_answer_claims_nothing():
    from detrprune.report.findings import answer, furthest, speed_words

    summary = study()
    summary[["delta_mAP_ci95_low", "delta_mAP_ci95_high"]] = math.nan
    lines = answer(summary, summary.iloc[0])
    # No interval: no highest ratio, the highest ratio's point estimate, no verdict.
    assert any(" ".join(line.split()).startswith("filter ft n/a -0.050 1.80x") for line in lines)
    assert "    (no paired comparison with the controls: no claim on accuracy)" in lines
    header = next(i for i, line in enumerate(lines) if line.startswith("  method"))
    assert not any("significant" in line for line in lines[header:])
    # What kept under half of its control's mAP still reads as collapsed (a point estimate).
    assert lines[-1] == "  prune/filter/r50 (0.100)"
    assert furthest(summary.iloc[0:0]) == ("-", None)
    row = summary.iloc[3]
    assert speed_words(row) == "1.80x [1.60, 2.00] faster"
    assert speed_words(row.drop(["speedup_ci95_low", "speedup_ci95_high"])) == (
        "1.80x (no interval)"
    )
    slower = row.copy()
    slower[["speedup", "speedup_ci95_low", "speedup_ci95_high"]] = 0.8, 0.7, 0.9
    assert speed_words(slower) == "0.80x [0.70, 0.90] slower"
    assert speed_words(row.drop("speedup")) == "n/a"
