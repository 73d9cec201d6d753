"""detrprune.evaluate.analysis / retime and bench/goals.py / goals_report.py: the goal checks on
small summary tables, reading the summary CSV (and its one-line errors), the record and the
printed report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from detrprune.evaluate import analysis
from detrprune.evaluate.analysis import (
    SummaryError,
    baseline_row,
    derived_numbers,
    read_summary,
    safe_ratio,
    size_numbers,
)
from detrprune.evaluate.retime import RetimeSettings, p90, retime_summary

BENCH = Path(__file__).resolve().parent.parent / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))  # bench/ is scripts, not a package: they import by name

import goals  # noqa: E402
from goals import (  # noqa: E402
    MET,
    NOT_MEASURED,
    NOT_MET,
    goal_a,
    goal_b,
    goal_c,
    goal_d,
    goal_e,
)
from goals_report import (  # noqa: E402
    check_goals,
    evaluate,
    goal_lines,
    jsonable,
    retimed_latency,
    retimed_table,
    variants_table,
)

NAN = math.nan
BASE = {
    "variant": "baseline",
    "kind": "baseline",
    "mAP": 0.6,
    "gmacs": 10.0,
    "latency_ms_median": 100.0,
    "checkpoint_mb": 60.0,
    "sparse_mb": 58.0,
    "sparse_bound_mb": 55.0,
}


def table(*rows: dict) -> pd.DataFrame:
    """A summary table as :func:`read_summary` returns it; unset numbers are NaN."""
    defaults = {
        "scope": "",
        "ratio": 0,
        "finetuned": False,
        "latency_device": "cpu (test)",
        **dict.fromkeys(analysis.CHECKED_COLUMNS[1:], NAN),
    }
    return pd.DataFrame([{**defaults, **row} for row in rows])


def filter_row(variant: str, scope: str, ratio: int, finetuned: bool = False, **values) -> dict:
    return {
        "variant": variant,
        "kind": "filter",
        "scope": scope,
        "ratio": ratio,
        "finetuned": finetuned,
        **values,
    }


def weight_row(variant: str, ratio: int, **values) -> dict:
    return {"variant": variant, "kind": "weight", "scope": "layerwise", "ratio": ratio, **values}


def verdicts(goal: dict) -> list[tuple[str, str]]:
    return [(check["subject"], check["verdict"]) for check in goal["checks"]]


# --------------------------------------------------------------------------------------------
# reading the summary
# --------------------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_read_summary_types_and_missing_values(tmp_path):
    summary = read_summary(
        write(
            tmp_path / "summary.csv",
            "variant,method,kind,scope,ratio,finetuned,mAP,mAP50,gmacs,latency_device,extra\n"
            "baseline,baseline,baseline,,0,False,0.6,-1,10,cpu (x),note\n"
            " prune/filter/r50 ,filter,filter,backbone,50.0,True,,0.7,5.5,cpu (x),3\n",
        )
    )
    assert summary["variant"].tolist() == ["baseline", "prune/filter/r50"]  # stripped
    assert summary["kind"].tolist() == ["baseline", "filter"]
    assert summary["scope"].tolist() == ["", "backbone"]
    assert summary["ratio"].dtype == "Int64" and summary["ratio"].tolist() == [0, 50]
    assert summary["finetuned"].tolist() == [False, True]
    assert math.isnan(summary.loc[1, "mAP"])  # blank cell
    assert math.isnan(summary.loc[0, "mAP50"])  # pycocotools' -1: not computed
    assert summary.loc[1, "mAP50"] == 0.7
    # A text cell in a column the goals do not read is NaN, as before, not an error.
    assert math.isnan(summary.loc[0, "extra"]) and summary.loc[1, "extra"] == 3.0
    # Goal columns the file lacks are there, all NaN.
    assert summary["sparse_mb"].isna().all() and summary["checkpoint_mb"].isna().all()


def test_read_summary_keeps_the_control_as_text(tmp_path):
    summary = read_summary(
        write(
            tmp_path / "summary.csv",
            "variant,kind,ratio,finetuned,control,map_kept\n"
            "baseline,baseline,0,False,,\n"
            "finetune/filter/r50,filter,50,True,finetune/baseline,0.98\n",
        )
    )
    assert summary["control"].tolist() == ["", "finetune/baseline"]
    assert summary.loc[1, "map_kept"] == 0.98
    assert read_summary(write(tmp_path / "old.csv", "variant,kind\nb,baseline\n"))[
        "control"
    ].tolist() == [""]


def test_read_summary_takes_the_kind_from_method_in_old_summaries(tmp_path):
    summary = read_summary(
        write(
            tmp_path / "summary.csv",
            "variant,method,ratio\nbaseline,baseline,0\nf,filter,50\nw,weight,90\nx,filter_ffn,50\n",
        )
    )
    assert summary["kind"].tolist() == ["baseline", "filter", "weight", ""]
    assert summary["finetuned"].tolist() == [False] * 4  # no column: not fine-tuned
    assert baseline_row(summary)["variant"] == "baseline"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file (run the workflow first: make demo)"),
        ("", "empty file, expected a CSV header"),
        ("kind,ratio\nfilter,50\n", "missing column 'variant' (is this the summary CSV?)"),
        ("variant,ratio\na,50\n", "missing column 'kind' (and no 'method' to derive it from)"),
        ("variant,kind,mAP\n", "no rows"),
        ("variant,kind\nbaseline,baseline\n,filter\n", "line 3 has an empty 'variant'"),
        ("variant,kind,gmacs\nb,baseline,10\nf,filter,5 GMACs\n", "line 3, column 'gmacs'"),
        ("variant,kind\nb,baseline\nf,filter,extra\n", "cannot read the summary (Error"),
    ],
)
def test_read_summary_errors_name_the_file_in_one_line(tmp_path, content, message):
    path = tmp_path / "summary.csv"
    if content is not None:
        write(path, content)
    with pytest.raises(SummaryError) as error:
        read_summary(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text


def test_a_bad_number_error_quotes_the_cell(tmp_path):
    path = write(tmp_path / "s.csv", "variant,kind,ratio\nb,baseline,0\nf,filter,half\n")
    with pytest.raises(SummaryError, match=r"line 3, column 'ratio': 'half' is not a number"):
        read_summary(path)


def test_a_read_summary_round_trip_gives_the_same_verdicts(tmp_path):
    rows = table(
        BASE, filter_row("ft", "backbone", 50, True, mAP=0.55, gmacs=5.0, latency_ms_median=50.0)
    )
    path = tmp_path / "summary.csv"
    rows.to_csv(path, index=False)
    read = read_summary(path)
    for check in (goal_a, goal_b):
        assert check(read, baseline_row(read)) == check(rows, baseline_row(rows))


# --------------------------------------------------------------------------------------------
# baseline and derived numbers
# --------------------------------------------------------------------------------------------


def test_baseline_row_prefers_the_one_not_fine_tuned():
    rows = table({**BASE, "variant": "ft-base", "finetuned": True}, BASE)
    assert baseline_row(rows)["variant"] == "baseline"
    assert baseline_row(rows).name == 1  # its label, for per-row lookups
    assert baseline_row(table({**BASE, "finetuned": True}))["variant"] == "baseline"
    assert baseline_row(table(filter_row("f", "backbone", 20))) is None


def test_safe_ratio_is_nan_without_a_positive_denominator():
    assert safe_ratio(3.0, 2.0) == 1.5
    assert math.isnan(safe_ratio(3.0, 0.0)) and math.isnan(safe_ratio(3.0, NAN))
    assert math.isnan(safe_ratio(NAN, 2.0))
    series = safe_ratio(pd.Series([1.0, 1.0, 1.0]), pd.Series([2.0, 0.0, -1.0]))
    assert series[0] == 0.5 and series[1:].isna().all()
    assert safe_ratio(10.0, pd.Series([4.0, NAN])).tolist()[0] == 2.5


def test_derived_and_size_numbers():
    rows = table(
        BASE,
        filter_row("f", "backbone", 50, mAP=0.3, gmacs=5.0, latency_ms_median=55.0),
        weight_row("w", 90, checkpoint_mb=60.0, sparse_mb=8.0, sparse_bound_mb=7.5),
    )
    numbers = derived_numbers(rows, baseline_row(rows))
    assert numbers.loc[1, "flops_reduction"] == pytest.approx(0.5)
    assert numbers.loc[1, "latency_reduction"] == pytest.approx(0.45)
    assert numbers.loc[1, "speedup"] == pytest.approx(100.0 / 55.0)
    assert numbers.loc[1, "gmacs_per_s"] == pytest.approx(5.0 / 0.055)
    assert numbers.loc[1, "map_retained"] == pytest.approx(0.5)
    assert numbers.loc[0, "speedup"] == 1.0
    assert numbers.loc[2, ["gmacs", "speedup", "map_retained"]].isna().all()
    # Another latency (re-timed): the baseline's comes from it too.
    other = derived_numbers(rows, baseline_row(rows), pd.Series([50.0, 40.0, NAN]))
    assert other.loc[1, "speedup"] == pytest.approx(50.0 / 40.0)
    sizes = size_numbers(rows)
    assert sizes.loc[2, "dense_over_sparse"] == pytest.approx(7.5)
    assert sizes.loc[2, "sparse_over_bound"] == pytest.approx(8.0 / 7.5)
    assert math.isnan(sizes.loc[1, "sparse_over_bound"])
    # Without a baseline nothing relative to it is measured.
    assert derived_numbers(rows.iloc[1:], None)["flops_reduction"].isna().all()


# --------------------------------------------------------------------------------------------
# the goals
# --------------------------------------------------------------------------------------------


def test_goal_a_verdicts():
    rows = table(
        BASE,
        filter_row("keeps", "backbone", 50, True, mAP=0.55),  # 91.7 %: met
        filter_row("loses", "backbone+ffn", 50, True, mAP=0.50),  # 83.3 %: not met
        filter_row("zero-shot", "other", 50, False, mAP=0.59),  # not fine-tuned: no check
        filter_row("unscored", "blank", 50, True),  # mAP missing
    )
    goal = goal_a(rows, baseline_row(rows))
    assert verdicts(goal) == [
        ("backbone", MET),
        ("backbone+ffn", NOT_MET),
        ("blank", NOT_MEASURED),
        ("other", NOT_MEASURED),
    ]
    assert goal["verdict"] == NOT_MET  # a failed check outweighs the unmeasured ones
    assert goal["checks"][0]["measured"]["map_retained"] == pytest.approx(0.55 / 0.6)
    assert goal["checks"][2]["reason"] == "mAP or baseline mAP missing"
    assert "no fine-tuned filter row at ratio 50" in goal["checks"][3]["reason"]
    assert goal_a(rows.iloc[[0, 1]], baseline_row(rows))["verdict"] == MET


def test_goal_a_leaves_out_the_random_criterion_control():
    rows = table(
        BASE,
        filter_row("l1", "backbone", 50, True, mAP=0.55),
        filter_row("random", "backbone:random", 50, True, mAP=0.10),
    )
    goal = goal_a(rows, baseline_row(rows))
    assert verdicts(goal) == [("backbone", MET)]
    assert goal["verdict"] == MET


def test_goal_a_is_not_measured_on_an_untrained_baseline_or_without_filter_rows():
    rows = table({**BASE, "mAP": 0.0}, filter_row("f", "backbone", 50, True, mAP=0.0))
    goal = goal_a(rows, baseline_row(rows))
    assert goal["verdict"] == NOT_MEASURED
    assert goal["checks"][0]["reason"] == "baseline mAP is 0"
    empty = goal_a(table(BASE), None)
    assert empty["verdict"] == NOT_MEASURED and empty["checks"] == []
    assert empty["reason"] == "no filter-pruned rows in the summary"


def test_goal_b_verdicts():
    rows = table(
        BASE,
        filter_row("fast", "backbone", 50, gmacs=5.0, latency_ms_median=55.0),  # 45 % >= 40 %
        filter_row("slow", "backbone", 20, gmacs=8.0, latency_ms_median=90.0),  # 10 % < 16 %
        filter_row("untimed", "backbone", 30, gmacs=7.0),
        weight_row("w", 50, gmacs=10.0, latency_ms_median=200.0),  # not a filter row
    )
    goal = goal_b(rows, baseline_row(rows))
    assert verdicts(goal) == [("fast", MET), ("slow", NOT_MET), ("untimed", NOT_MEASURED)]
    assert goal["verdict"] == NOT_MET
    measured = goal["checks"][1]["measured"]
    assert measured["required_latency_reduction"] == pytest.approx(0.16)
    assert measured["latency_reduction"] == pytest.approx(0.1)
    assert measured["baseline_latency_ms"] == 100.0
    assert "summary latency" in goal["description"]
    assert goal_b(rows.iloc[[0, 1]], baseline_row(rows))["verdict"] == MET
    assert goal_b(rows.iloc[[0, 1, 3]], baseline_row(rows))["verdict"] == NOT_MEASURED


def test_goal_b_on_other_latencies():
    rows = table(BASE, filter_row("f", "backbone", 20, gmacs=8.0, latency_ms_median=90.0))
    retimed = pd.Series([100.0, 70.0])  # re-timed: 30 % faster for 20 % fewer FLOPs
    goal = goal_b(rows, baseline_row(rows), retimed, "re-timed")
    assert goal["verdict"] == MET and "re-timed latency" in goal["description"]
    unmeasured = goal_b(rows, baseline_row(rows), pd.Series([NAN, 70.0]), "re-timed")
    assert unmeasured["verdict"] == NOT_MEASURED
    assert unmeasured["checks"][0]["reason"] == "GMACs or latency (or baseline) missing"


def test_goal_c_compares_zero_shot_scopes_at_equal_ratios():
    rows = table(
        filter_row("n20", "backbone", 20, gmacs=8.0),
        filter_row("w20", "backbone+ffn", 20, gmacs=7.0),  # fewer: met
        filter_row("n50", "backbone", 50, gmacs=5.0),
        filter_row("w50", "backbone+ffn", 50, gmacs=5.5),  # more: not met
        filter_row("w50ft", "backbone+ffn", 50, True, gmacs=1.0),  # fine-tuned: ignored
        filter_row("n70", "backbone", 70),  # no GMACs
        filter_row("w70", "backbone+ffn", 70, gmacs=3.0),
        filter_row("n90", "backbone", 90, gmacs=1.0),  # no wide row at 90
    )
    goal = goal_c(rows)
    assert verdicts(goal) == [("r20", MET), ("r50", NOT_MET), ("r70", NOT_MEASURED)]
    assert goal["checks"][0]["measured"] == {
        "ratio": 20,
        "gmacs_backbone+ffn": 7.0,
        "gmacs_backbone": 8.0,
        "variants": ["w20", "n20"],
    }
    assert goal["checks"][2]["reason"] == "GMACs missing"
    assert goal["unpaired_ratios"] == [90]
    assert goal["verdict"] == NOT_MET
    assert goal_c(rows.iloc[:2])["verdict"] == MET


def test_goal_c_pairs_every_method_and_needs_both_scopes():
    rows = table(
        filter_row("w-a", "backbone+ffn", 20, gmacs=7.0),
        filter_row("w-b", "backbone+ffn", 20, gmacs=7.5),
        filter_row("n", "backbone", 20, gmacs=8.0),
    )
    assert [c["measured"]["variants"] for c in goal_c(rows)["checks"]] == [
        ["w-a", "n"],
        ["w-b", "n"],
    ]
    alone = goal_c(rows.iloc[:2])
    assert alone["verdict"] == NOT_MEASURED and alone["checks"] == []
    assert "no ratio has zero-shot filter rows of both scopes" in alone["reason"]


def test_goal_d_verdicts():
    rows = table(
        BASE,  # 58 / 55 = 1.05x its bound
        weight_row("w90", 90, checkpoint_mb=60.0, sparse_mb=8.0, sparse_bound_mb=7.5),  # 7.5x
        weight_row("w50", 50, checkpoint_mb=60.0, sparse_mb=33.0, sparse_bound_mb=31.0),
    )
    goal = goal_d(rows)
    assert goal["verdict"] == MET
    assert verdicts(goal["parts"]["bound"]) == [("baseline", MET), ("w90", MET), ("w50", MET)]
    dense = goal["parts"]["dense_over_sparse"]
    assert verdicts(dense) == [("w90", MET)]
    assert dense["checks"][0]["measured"]["ratio"] == 90

    big = rows.copy()
    big.loc[1, ["sparse_mb", "sparse_bound_mb"]] = [15.0, 10.0]  # 4x smaller, 1.5x its bound
    goal = goal_d(big)
    assert goal["verdict"] == NOT_MET
    assert verdicts(goal["parts"]["bound"])[1] == ("w90", NOT_MET)
    assert goal["parts"]["dense_over_sparse"]["checks"][0]["measured"]["dense_over_sparse"] == 4.0


def test_goal_d_without_a_high_ratio_weight_row():
    rows = table(BASE, weight_row("w50", 50, checkpoint_mb=60.0, sparse_mb=33.0))
    goal = goal_d(rows)
    assert goal["verdict"] == NOT_MEASURED  # w50's bound is missing; the r90 row too
    assert goal["parts"]["bound"]["checks"][1]["reason"] == "sparse_mb or sparse_bound_mb missing"
    assert goal["parts"]["dense_over_sparse"]["reason"] == "no weight-pruned row at ratio >= 90"
    assert goal_d(table(BASE))["verdict"] == NOT_MEASURED  # every bound met, no r90 row
    assert goal_d(table({**BASE, "sparse_mb": 70.0}))["verdict"] == NOT_MET


# --------------------------------------------------------------------------------------------
# goal e: latency elasticity of the best structured variant with >= 40 % fewer GMACs
# --------------------------------------------------------------------------------------------

# The fine-tuned twin's comparison with its control of equal training (finetune/baseline):
# within the paired interval, and 98 % of the control's mAP.
KEPT = {
    "control": "finetune/baseline",
    "map_kept": 0.98,
    "delta_mAP": -0.01,
    "delta_mAP_ci95_low": -0.03,
    "delta_mAP_ci95_high": 0.01,
}


def elastic_study(**twin: float) -> pd.DataFrame:
    """Filter rows around the 40 % GMACs cut, each elasticity chosen, and rows goal e skips.

    prune/f50 (50 % fewer GMACs, 45 % faster: elasticity 0.9) is the best candidate; its
    fine-tuned twin (0.8) and prune/all40 (exactly 40 % fewer, 0.5) are the others; ``twin``
    overrides the twin's comparison with its control.
    """
    return table(
        BASE,
        filter_row("prune/f20", "backbone", 20, gmacs=8.0, latency_ms_median=75.0),  # 20 %: no
        filter_row("prune/f50", "backbone", 50, gmacs=5.0, latency_ms_median=55.0),
        filter_row("finetune/f50", "backbone", 50, True, gmacs=5.0, latency_ms_median=60.0,
                   mAP=0.55, **{**KEPT, **twin}),
        filter_row("prune/all40", "backbone+residual+ffn", 40, gmacs=6.0, latency_ms_median=80.0),
        # The criterion's control shares the architecture: a control, not a candidate.
        filter_row("prune/random50", "backbone:random", 50, gmacs=5.0, latency_ms_median=40.0),
        weight_row("prune/w90", 90, gmacs=10.0, latency_ms_median=50.0),
    )  # fmt: skip


def check_of(goal: dict, prefix: str) -> dict:
    return next(c for c in goal["checks"] if c["subject"].startswith(prefix))


def test_derived_numbers_give_the_latency_elasticity():
    numbers = derived_numbers(elastic_study(), baseline_row(elastic_study()))
    assert numbers.loc[2, "elasticity"] == pytest.approx(0.45 / 0.5)
    assert numbers.loc[3, "elasticity"] == pytest.approx(0.4 / 0.5)
    # The baseline and the weight row do not cut GMACs: nothing to be elastic to.
    assert math.isnan(numbers.loc[0, "elasticity"]) and math.isnan(numbers.loc[6, "elasticity"])


def test_goal_e_met():
    rows = elastic_study()
    goal = goal_e(rows, baseline_row(rows))
    assert goal["verdict"] == MET
    assert goal["best"] == "prune/f50" and goal["latency_source"] == "summary"
    assert verdicts(goal) == [("elasticity prune/f50", MET), ("accuracy finetune/f50", MET)]
    elastic = check_of(goal, "elasticity")["measured"]
    assert elastic["elasticity"] == pytest.approx(0.9)
    assert elastic["flops_reduction"] == pytest.approx(0.5)
    assert elastic["baseline_latency_ms"] == 100.0 and elastic["required"] == 0.8
    accuracy = check_of(goal, "accuracy")["measured"]
    assert accuracy["control"] == "finetune/baseline" and accuracy["map_kept"] == 0.98
    # Candidates: >= 40 % fewer GMACs, filter kind, not the random-criterion control.
    assert [c["variant"] for c in goal["candidates"]] == [
        "prune/f50",
        "finetune/f50",
        "prune/all40",
    ]
    assert [c["accuracy_met"] for c in goal["candidates"]] == [True, True, None]
    assert goal["candidates"][2]["elasticity"] == pytest.approx(0.5)
    assert "summary latency" in goal["description"]
    json.dumps(jsonable(goal), allow_nan=False)


def test_goal_e_not_met_by_elasticity():
    rows = elastic_study()
    rows.loc[2, "latency_ms_median"] = 80.0  # 20 % faster for 50 % fewer GMACs: 0.4
    rows.loc[3, "latency_ms_median"] = 70.0  # the twin becomes the best: 0.6
    goal = goal_e(rows, baseline_row(rows))
    assert goal["verdict"] == NOT_MET and goal["best"] == "finetune/f50"
    assert verdicts(goal) == [("elasticity finetune/f50", NOT_MET), ("accuracy finetune/f50", MET)]
    assert check_of(goal, "elasticity")["measured"]["elasticity"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("twin", "verdict"),
    [
        # a significant drop of 8 %: outside the interval and more than 3 % below the control
        ({"map_kept": 0.92, "delta_mAP_ci95_low": -0.08, "delta_mAP_ci95_high": -0.02}, NOT_MET),
        # a significant drop of 2.5 %: outside the interval but within 3 %
        ({"map_kept": 0.975, "delta_mAP_ci95_low": -0.03, "delta_mAP_ci95_high": -0.01}, MET),
        # 90 % of the control, but the interval includes 0 (a noisy validation set)
        ({"map_kept": 0.90, "delta_mAP_ci95_low": -0.1, "delta_mAP_ci95_high": 0.02}, MET),
        # no interval, and 90 %: cannot tell
        ({"map_kept": 0.90, "delta_mAP_ci95_low": NAN, "delta_mAP_ci95_high": NAN}, NOT_MEASURED),
        # no interval, but 99 %: within 3 % whatever the interval
        ({"map_kept": 0.99, "delta_mAP_ci95_low": NAN, "delta_mAP_ci95_high": NAN}, MET),
    ],
)
def test_goal_e_accuracy_against_the_control(twin, verdict):
    rows = elastic_study(**twin)
    goal = goal_e(rows, baseline_row(rows))
    assert check_of(goal, "elasticity")["verdict"] == MET
    assert check_of(goal, "accuracy")["verdict"] == verdict
    assert goal["verdict"] == verdict


# Seed replicates (pruning.finetune.replicate_seeds) of the twin and its control.
OVER_SEEDS = {"seeds": 4, "delta_mAP_seed_mean": -0.045}


@pytest.mark.parametrize(
    ("twin", "verdict"),
    [
        # one lucky seed: its interval includes 0, but over four seeds a drop of 10 %
        (
            {
                **OVER_SEEDS,
                "map_kept": 0.95,
                "delta_mAP_ci95_low": -0.05,
                "delta_mAP_ci95_high": 0.01,
                "delta_mAP_seed_ci95_low": -0.07,
                "delta_mAP_seed_ci95_high": -0.02,
                "map_kept_seed_mean": 0.90,
            },
            NOT_MET,
        ),
        # one unlucky seed: a significant drop of 8 %, but over the seeds no difference
        (
            {
                **OVER_SEEDS,
                "map_kept": 0.92,
                "delta_mAP_ci95_low": -0.08,
                "delta_mAP_ci95_high": -0.02,
                "delta_mAP_seed_ci95_low": -0.04,
                "delta_mAP_seed_ci95_high": 0.01,
                "map_kept_seed_mean": 0.96,
            },
            MET,
        ),
    ],
    ids=["lucky-seed", "unlucky-seed"],
)
def test_goal_e_accuracy_is_judged_over_training_seeds_where_there_are_some(twin, verdict):
    rows = elastic_study(**twin)
    goal = goal_e(rows, baseline_row(rows))
    accuracy = check_of(goal, "accuracy")
    assert accuracy["verdict"] == verdict
    assert accuracy["measured"]["training_seeds"] == 4
    assert accuracy["measured"]["map_kept_seed_mean"] == twin["map_kept_seed_mean"]
    # The single run's numbers stay beside them.
    assert accuracy["measured"]["map_kept"] == twin["map_kept"]


@pytest.mark.parametrize(
    ("twin", "ruled_out"),
    [
        # control 0.56 (0.55 + 0.01): 3 % of it is 0.0168, and the interval ends above that
        ({"delta_mAP_ci95_low": -0.015, "delta_mAP_ci95_high": 0.01}, True),
        # the same point estimate, but a wide interval: met, yet a 10 % drop is not ruled out
        ({"delta_mAP_ci95_low": -0.06, "delta_mAP_ci95_high": 0.04}, False),
        # over four seeds: control 0.58 (0.55 + 0.03), the interval's lower end -0.05
        (
            {
                **OVER_SEEDS,
                "mAP_seed_mean": 0.55,
                "delta_mAP_seed_mean": -0.03,
                "delta_mAP_seed_ci95_low": -0.052,
                "delta_mAP_seed_ci95_high": 0.002,
                "map_kept_seed_mean": 0.95,
            },
            False,
        ),
    ],
    ids=["narrow", "wide", "seeds"],
)
def test_goal_e_says_whether_the_interval_rules_out_a_drop_beyond_3_percent(twin, ruled_out):
    """The interval containing 0 meets the goal, but only a narrow one also shows the drop is
    small: the 256-d study's four-seed run (-0.025 [-0.052, +0.002]) was MET on a wide interval."""
    rows = elastic_study(**twin)
    goal = goal_e(rows, baseline_row(rows))
    accuracy = check_of(goal, "accuracy")
    assert accuracy["verdict"] == MET
    control = 0.58 if "seeds" in twin else 0.56
    assert accuracy["measured"]["tolerated_drop"] == pytest.approx(-0.03 * control)
    assert accuracy["measured"]["drop_over_3pct_ruled_out"] is ruled_out
    warned = [line for line in goal_lines("e", goal) if "is not ruled out" in line]
    assert len(warned) == (0 if ruled_out else 1)
    if warned:
        assert f"below {-0.03 * control:+.3f} (-3 % of the control)" in warned[0]


def test_goal_e_not_met_by_accuracy_outweighs_a_met_elasticity():
    rows = elastic_study(map_kept=0.9, delta_mAP_ci95_low=-0.1, delta_mAP_ci95_high=-0.05)
    goal = goal_e(rows, baseline_row(rows))
    assert goal["verdict"] == NOT_MET
    assert verdicts(goal) == [("elasticity prune/f50", MET), ("accuracy finetune/f50", NOT_MET)]


def test_goal_e_not_measured():
    rows = elastic_study()
    # No row with >= 40 % fewer GMACs (the random control does not count).
    few = rows[~rows["variant"].isin(["prune/f50", "finetune/f50", "prune/all40"])]
    goal = goal_e(few, baseline_row(few))
    assert goal["verdict"] == NOT_MEASURED and goal["checks"] == []
    assert goal["reason"].startswith("no filter row with >= 40 % fewer GMACs")
    # No fine-tuned twin: the best candidate's accuracy is not measured.
    alone = rows[rows["variant"] != "finetune/f50"]
    goal = goal_e(alone, baseline_row(alone))
    assert goal["verdict"] == NOT_MEASURED
    assert check_of(goal, "accuracy")["reason"] == "no fine-tuned row of this method and ratio"
    # No candidate's latency measured.
    untimed = rows.assign(latency_ms_median=NAN)
    goal = goal_e(untimed, baseline_row(untimed))
    assert verdicts(goal) == [("elasticity", NOT_MEASURED)]
    assert "no candidate's summary latency" in goal["checks"][0]["reason"]
    # No baseline: nothing is relative to it.
    assert goal_e(rows.iloc[1:], None)["verdict"] == NOT_MEASURED


def test_goal_e_twins_pair_by_method_scope_and_ratio():
    """Two methods of one scope and ratio: each zero-shot row is judged on its own twin."""
    rows = elastic_study(map_kept=0.5, delta_mAP_ci95_low=-0.4, delta_mAP_ci95_high=-0.2)
    rows["method"] = ["baseline", "filter", "filter", "filter", "all", "random", "weight"]
    other = [
        filter_row("prune/g50", "backbone", 50, gmacs=5.0, latency_ms_median=50.0, method="g"),
        filter_row("finetune/g50", "backbone", 50, True, gmacs=5.0, method="g", **KEPT),
    ]
    rows = pd.concat([rows, table(*other)], ignore_index=True)
    goal = goal_e(rows, baseline_row(rows))
    assert goal["best"] == "prune/g50"  # 1.0
    assert goal["verdict"] == MET
    assert check_of(goal, "accuracy")["subject"] == "accuracy finetune/g50"
    accuracy = {c["variant"]: c["accuracy_variant"] for c in goal["candidates"]}
    assert accuracy["prune/f50"] == "finetune/f50" and accuracy["prune/g50"] == "finetune/g50"


def test_goal_e_on_retimed_latency_with_its_interval():
    rows = elastic_study()
    retimed = pd.Series([100.0, NAN, 80.0, NAN, NAN, NAN, NAN])  # only prune/f50 re-timed
    speedup_ci = pd.DataFrame({"speedup_ci95_low": [1.1], "speedup_ci95_high": [1.5]}, index=[2])
    goal = goal_e(rows, baseline_row(rows), retimed, "re-timed", speedup_ci)
    assert goal["latency_source"] == "re-timed" and "re-timed latency" in goal["description"]
    assert goal["verdict"] == NOT_MET  # 20 % faster for 50 % fewer GMACs: 0.4
    measured = check_of(goal, "elasticity")["measured"]
    assert measured["elasticity"] == pytest.approx(0.4)
    assert measured["speedup"] == pytest.approx(1.25)
    assert measured["speedup_ci95_low"] == 1.1 and measured["speedup_ci95_high"] == 1.5
    # speedup s -> elasticity (1 - 1/s) / 0.5
    assert measured["elasticity_ci95_low"] == pytest.approx((1 - 1 / 1.1) / 0.5)
    assert measured["elasticity_ci95_high"] == pytest.approx((1 - 1 / 1.5) / 0.5)
    # The candidates without a re-timed latency are listed, unmeasured.
    assert all(math.isnan(c["elasticity"]) for c in goal["candidates"][1:])


def test_evaluate_judges_goal_e_on_the_retimed_latency():
    rows = elastic_study()
    timing = {"latency_ms_p90": 1.0, "latency_runs": 4, "round_medians_ms": [1.0, 2.0]}
    models = {
        variant: {"latency_ms_median": ms, **timing, "round_times_ms": [[ms, ms], [ms, ms]]}
        for variant, ms in (("baseline", 100.0), ("prune/f50", 60.0), ("finetune/f50", 50.0))
    }
    retimed = {
        "rounds": 2,
        "runs_per_round": 2,
        "images": 1,
        "latency_device": "cpu (test)",
        "models": models,
    }
    entries, checked = evaluate(rows, retimed)
    assert list(checked) == ["a", "b", "c", "d", "b_retimed", "e"]
    goal = checked["e"]
    assert goal["latency_source"] == "re-timed" and goal["best"] == "finetune/f50"
    assert goal["verdict"] == MET  # 50 % faster for 50 % fewer GMACs: 1.0
    measured = check_of(goal, "elasticity")["measured"]
    assert measured["elasticity"] == pytest.approx(1.0)
    assert measured["speedup_ci95_low"] == pytest.approx(2.0)
    # Every re-timed filter entry carries its elasticity and the interval of it.
    tuned = entries[3]["retimed"]
    assert tuned["elasticity"] == pytest.approx(1.0)
    assert tuned["elasticity_ci95_low"] == pytest.approx(1.0)
    assert entries[2]["retimed"]["elasticity"] == pytest.approx(0.8)
    assert retimed_table(entries)["elast"].tolist()[1:] == pytest.approx([0.8, 1.0])
    text = check_goals(Path("s.csv"), rows, retimed).report()
    assert "candidates' elasticity (re-timed latency): prune/f50 0.8, finetune/f50 1," in text


# --------------------------------------------------------------------------------------------
# elasticity in the tables and the explanation by part
# --------------------------------------------------------------------------------------------


def with_parts(rows: pd.DataFrame) -> pd.DataFrame:
    """GMACs and latency by part: the backbone halves its GMACs and time in prune/f50 but the
    encoder and the unclaimed rest keep their time."""
    parts = {
        "gmacs_backbone": [6.0, 4.8, 3.0, 3.0, 3.6, 3.0, 6.0],
        "gmacs_encoder": [3.0, 2.4, 1.5, 1.5, 1.8, 1.5, 3.0],
        "gmacs_other": [0.1] * 7,
        "latency_ms_backbone": [50.0, 40.0, 25.0, 27.0, 35.0, 25.0, 50.0],
        "latency_ms_encoder": [30.0, 28.0, 28.0, 28.0, 28.0, 28.0, 30.0],
        "latency_ms_rest": [10.0] * 7,
    }
    return rows.assign(**parts)


def test_entries_explain_each_filter_variant_by_part():
    rows = with_parts(elastic_study())
    entries, checked = evaluate(rows)
    assert entries[0]["by_part"] is None and entries[6]["by_part"] is None  # not filter rows
    parts = entries[2]["by_part"]
    assert list(parts) == ["backbone", "neck", "encoder", "decoder", "head", "rest"]
    assert parts["backbone"]["gmacs_reduction"] == pytest.approx(0.5)
    assert parts["backbone"]["latency_reduction"] == pytest.approx(0.5)
    assert parts["encoder"]["gmacs_reduction"] == pytest.approx(0.5)
    assert parts["encoder"]["latency_reduction"] == pytest.approx(2 / 30)
    assert parts["encoder"]["elasticity"] == pytest.approx((2 / 30) / 0.5)
    assert parts["rest"]["gmacs_part"] == "other" and parts["rest"]["latency_ms"] == 10.0
    assert math.isnan(parts["neck"]["latency_ms"])  # the summary has no neck columns
    assert jsonable(checked["e"]["by_part"]) == jsonable(parts)
    text = check_goals(Path("s.csv"), rows).report()
    lines = text.splitlines()
    start = lines.index("    by part, baseline -> prune/f50 (latency: the summary's, per part):")
    assert lines[start + 1].split() == [
        "backbone", "GMACs", "6.000", "->", "3.000", "(-50.0%),", "latency", "50.00", "->",
        "25.00", "ms", "(-50.0%),", "elasticity", "1.00",
    ]  # fmt: skip
    assert lines[start + 2].split()[:6] == ["neck", "GMACs", "n/a", "->", "n/a,", "latency"]
    assert "encoder" in lines[start + 3] and "30.00 -> 28.00 ms (-6.7%)" in lines[start + 3]
    assert lines[start + 6].split()[:3] == ["rest", "(GMACs", "other)"]
    assert "10.00 -> 10.00 ms (+0.0%)" in lines[start + 6]


def test_the_report_says_when_the_summary_has_no_latency_by_part():
    text = check_goals(Path("s.csv"), elastic_study()).report()
    assert "    by part, baseline -> prune/f50 (latency: the summary's, per part):" in text
    assert "(the summary has no latency_ms_<part> columns: latency by part n/a)" in text


def test_a_failed_latency_check_is_explained_by_part_when_the_summary_has_parts():
    rows = with_parts(elastic_study())
    lines = goal_lines("b", goal_b(rows, baseline_row(rows)), {
        e["variant"]: e["by_part"] for e in evaluate(rows)[0]
    })  # fmt: skip
    failed = next(i for i, line in enumerate(lines) if "not met      prune/all40:" in line)
    assert lines[failed + 1] == (
        "        by part, baseline -> prune/all40 (latency: the summary's, per part):"
    )
    met = next(i for i, line in enumerate(lines) if "met          prune/f50:" in line)
    assert "by part" not in lines[met + 1]  # only a failed check is explained
    # Without latency by part there is nothing to explain a failed check with.
    rows = elastic_study()
    plain = goal_lines("b", goal_b(rows, baseline_row(rows)), {
        e["variant"]: e["by_part"] for e in evaluate(rows)[0]
    })  # fmt: skip
    assert not any("by part" in line for line in plain)


def test_variants_table_shows_every_filter_elasticity():
    entries, _ = evaluate(elastic_study())
    shown = variants_table(entries)
    assert shown["elast"].tolist()[1:6] == pytest.approx([1.25, 0.9, 0.8, 0.5, 1.2])
    assert math.isnan(shown["elast"][0]) and math.isnan(shown["elast"][6])
    text = check_goals(Path("s.csv"), elastic_study()).report()
    assert " elast " in text.splitlines()[3] and "0.90" in text


# --------------------------------------------------------------------------------------------
# entries, record, printed report
# --------------------------------------------------------------------------------------------


def study() -> pd.DataFrame:
    """A baseline, a zero-shot filter row at 50 % and a weight row at 90 %: goals b and d met."""
    sizes = {"checkpoint_mb": 30.0, "sparse_mb": 29.0, "sparse_bound_mb": 27.0}
    return table(
        BASE,
        filter_row(
            "prune/f50", "backbone", 50, mAP=0.3, gmacs=5.0, latency_ms_median=55.0, **sizes
        ),
        weight_row("prune/w90", 90, checkpoint_mb=60.0, sparse_mb=8.0, sparse_bound_mb=7.5),
    )


def test_evaluate_and_record():
    rows = study()
    entries, checked = evaluate(rows)
    assert [e["variant"] for e in entries] == ["baseline", "prune/f50", "prune/w90"]
    assert entries[1]["ratio"] == 50 and isinstance(entries[1]["ratio"], int)
    assert entries[1]["summary"]["speedup"] == pytest.approx(100.0 / 55.0)
    assert entries[2]["sizes"]["dense_over_sparse"] == pytest.approx(7.5)
    assert all(e["retimed"] is None for e in entries)
    assert list(checked) == ["a", "b", "c", "d", "e"]
    record = check_goals(Path("s.csv"), rows).record()
    assert record["baseline"] == "baseline" and record["summary"] == "s.csv"
    assert record["thresholds"]["map_keep"] == goals.MAP_KEEP
    # e: prune/f50 (50 % fewer GMACs, elasticity 0.9) has no fine-tuned twin to judge mAP on.
    assert record["verdicts"] == {
        "a": NOT_MEASURED,
        "b": MET,
        "c": NOT_MEASURED,
        "d": MET,
        "e": NOT_MEASURED,
    }
    assert record["variants"][2]["summary"]["speedup"] is None  # NaN -> null
    json.dumps(record, allow_nan=False)  # strict JSON


def test_evaluate_with_retimed_models():
    rows = study()
    timing = {"latency_ms_p90": 1.0, "latency_runs": 4, "round_medians_ms": [1.0, 2.0]}
    retimed = {
        "rounds": 2,
        "runs_per_round": 2,
        "images": 1,
        "latency_device": "cpu (test)",
        "models": {
            "baseline": {
                "latency_ms_median": 80.0,
                **timing,
                "round_times_ms": [[80.0, 80.0], [84.0, 84.0]],
            },
            "prune/f50": {
                "latency_ms_median": 40.0,
                **timing,
                "round_times_ms": [[40.0, 40.0], [40.0, 40.0]],
            },
        },
    }
    assert retimed_latency(rows, retimed["models"]).tolist()[:2] == [80.0, 40.0]
    entries, checked = evaluate(rows, retimed)
    assert entries[1]["retimed"]["speedup"] == pytest.approx(2.0)
    assert entries[1]["retimed"]["latency_runs"] == 4
    # Rounds drawn with replacement: both rounds' speedups (2.0 and 2.1) bound the interval.
    low, high = (
        entries[1]["retimed"]["speedup_ci95_low"],
        entries[1]["retimed"]["speedup_ci95_high"],
    )
    assert 2.0 <= low <= high <= 2.1 and high > low
    assert entries[2]["retimed"] is None
    assert checked["b_retimed"]["verdict"] == MET
    assert checked["b_retimed"]["checks"][0]["measured"]["latency_ms"] == 40.0
    table_ = retimed_table(entries)
    assert table_["variant"].tolist() == ["baseline", "prune/f50"]
    assert table_.loc[1, "lat chg"] == pytest.approx(-0.5)
    text = check_goals(Path("s.csv"), rows, retimed).report()
    assert "re-timed in one process: 2 rounds x 2 runs per model" in text
    assert "1-2" in text and "goal b_retimed: MET" in text


def test_variants_table_and_report():
    rows = study()
    check = check_goals(Path("s.csv"), rows)
    shown = variants_table(check.entries)
    assert shown["FLOPs chg"].tolist()[:2] == pytest.approx([0.0, -0.5])  # a change
    assert shown["ft"].tolist() == ["no", "no", "no"]
    assert shown["scope"].tolist() == ["-", "backbone", "layerwise"]
    text = check.report()
    lines = text.splitlines()
    assert lines[:2] == [
        "summary: s.csv (3 rows)",
        "baseline: baseline; latency device: cpu (test)",
    ]
    assert "-50.0%" in text and "1.82x" in text and "n/a" in text
    assert "goal b: MET  -- latency falls by >= 0.8x" in text
    assert "    met          prune/f50: gmacs=5, baseline_gmacs=10," in text
    assert "        met          prune/w90: ratio=90, checkpoint_mb=60" in text
    assert "re-timed" not in text
    no_base = check_goals(Path("s.csv"), rows.iloc[1:]).report()
    assert "no baseline row (kind 'baseline')" in no_base


def test_jsonable_replaces_nan_everywhere():
    assert jsonable({"a": [NAN, (1.0, NAN)], 2: {"b": NAN}}) == {
        "a": [None, [1.0, None]],
        "2": {"b": None},
    }


# --------------------------------------------------------------------------------------------
# re-timing (without models) and the import cost
# --------------------------------------------------------------------------------------------


def test_p90_matches_cpu_latency():
    assert p90([5.0, 1.0, 3.0]) == 5.0
    assert p90([float(i) for i in range(1, 11)]) == 9.0


def test_retime_summary_needs_an_input_scale(tmp_path):
    with pytest.raises(SummaryError, match="no model.input_scale to re-time with"):
        retime_summary(study(), RetimeSettings(config=tmp_path / "none.yaml"))


def test_retime_summary_without_model_files(tmp_path):
    settings = RetimeSettings(results=tmp_path, input_scale=(64, 32), threads=1, kinds=("all",))
    record = retime_summary(study(), settings)
    assert record["models"] == {} and record["images"] == 0
    assert set(record["not_measured"]) == {"baseline", "prune/f50", "prune/w90"}
    assert record["input_scale"] == [64, 32] and record["threads"] == 1
    assert record["runs_per_round"] == 2  # 40 runs over 20 rounds
    only_filters = retime_summary(study(), RetimeSettings(results=tmp_path, input_scale=(64, 32)))
    assert set(only_filters["not_measured"]) == {"baseline", "prune/f50"}


def test_goals_import_no_torch():
    code = (
        f"import sys; sys.path.insert(0, {str(BENCH)!r}); "
        "import detrprune.evaluate.analysis, goals, goals_report, "
        "detrprune.evaluate.retime; print(sorted({'torch', 'mmdet'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_speedup_interval_pairs_whole_rounds():
    from detrprune.evaluate.latency import speedup_interval

    rounds = [[10.0, 11.0], [20.0, 22.0], [15.0, 16.0]]  # drift between rounds
    assert speedup_interval(rounds, rounds) == (1.0, 1.0)
    half = [[t / 2 for t in chunk] for chunk in rounds]
    assert speedup_interval(rounds, half) == pytest.approx((2.0, 2.0))
    # Unpaired, the same drift would look like a wide speedup interval around 1.
    low, high = speedup_interval(rounds, rounds[::-1])
    assert low < 1.0 < high
    with pytest.raises(ValueError, match="pair up"):
        speedup_interval(rounds, rounds[:2])
