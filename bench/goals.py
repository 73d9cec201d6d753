"""The pruning study's goals, judged on the summary table (``results/summary.csv``).

Pure functions over the summary as read by :func:`detrprune.evaluate.analysis.read_summary`,
behind ``bench/pruning_goals.py``; the numbers they judge are
:mod:`detrprune.evaluate.analysis`'s:

a. filter pruning at 50 % keeps >= 90 % of the baseline mAP after fine-tuning (per scope; the
   random-criterion control, scope ``<scope>:random``, is not held to it);
b. CPU latency falls by at least 0.8x the fraction FLOPs fall (every filter variant);
c. filter scope ``backbone+ffn`` cuts more FLOPs than ``backbone`` at equal ratio (zero-shot);
d. every sparse checkpoint is <= 1.1x its information bound, and at >= 90 % weight pruning it is
   >= 6x smaller than the dense checkpoint;
e. the structured variant with the highest latency elasticity (relative latency drop / relative
   GMAC drop) among those with >= 40 % fewer GMACs than the baseline reaches an elasticity of
   0.8, and its fine-tuned twin's mAP is within the paired interval of its control of equal
   training or at most 3 % below it.

A goal's verdict is ``met``, ``not met`` or ``not measured`` (a row or column the summary lacks):
a measurement, not an assertion. Rows are keyed on the ``kind`` / ``scope`` / ``ratio`` /
``finetuned`` columns, never on the user-chosen method name. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from detrprune.evaluate.analysis import (
    derived_numbers,
    part_changes,
    ratio_values,
    row_value,
    safe_ratio,
    size_numbers,
    speedup_to_elasticity,
)

# Goal thresholds.
FILTER_GOAL_RATIO = 50  # goal a: the filter ratio (percent) checked after fine-tuning
MAP_KEEP = 0.90  # goal a: share of the baseline mAP to keep
LATENCY_SHARE = 0.80  # goal b: latency must fall by this share of the FLOPs fall
SCOPE_NARROW, SCOPE_WIDE = "backbone", "backbone+ffn"  # goal c: the filter scopes compared
SPARSE_BOUND_SLACK = 1.10  # goal d: sparse_mb <= this x sparse_bound_mb
WEIGHT_HIGH_RATIO = 90  # goal d: weight ratio (percent, and above) for the dense/sparse check
DENSE_OVER_SPARSE_MIN = 6.0  # goal d: checkpoint_mb / sparse_mb at that ratio
ELASTICITY_FLOPS_CUT = 0.40  # goal e: candidates have at least this share fewer GMACs
ELASTICITY_MIN = 0.80  # goal e: latency drop / GMACs drop of the best candidate
CONTROL_MAP_KEEP = 0.97  # goal e: else its mAP is at most 3 % below its control's

# As copied into the JSON record.
THRESHOLDS: dict[str, float] = {
    "filter_goal_ratio": FILTER_GOAL_RATIO,
    "map_keep": MAP_KEEP,
    "latency_share": LATENCY_SHARE,
    "sparse_bound_slack": SPARSE_BOUND_SLACK,
    "weight_high_ratio": WEIGHT_HIGH_RATIO,
    "dense_over_sparse_min": DENSE_OVER_SPARSE_MIN,
    "elasticity_flops_cut": ELASTICITY_FLOPS_CUT,
    "elasticity_min": ELASTICITY_MIN,
    "control_map_keep": CONTROL_MAP_KEEP,
}

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"


def _missing(*values: float) -> bool:
    return any(math.isnan(v) for v in values)


def _judge(
    subject: str, measured: Mapping[str, Any], passed: bool | None, reason: str
) -> dict[str, Any]:
    """One checked item of a goal (a scope, a variant, a ratio); ``passed`` None: not measured,
    for ``reason``."""
    verdict = NOT_MEASURED if passed is None else MET if passed else NOT_MET
    check: dict[str, Any] = {"subject": subject, "verdict": verdict, "measured": dict(measured)}
    if passed is None:
        check["reason"] = reason
    return check


def _goal(description: str, checks: list[dict[str, Any]], empty_reason: str) -> dict[str, Any]:
    """A goal's verdict from its checks: ``not met`` if any check fails, ``not measured`` if any
    (or every) check could not be measured, ``met`` only when every check was measured and met."""
    verdicts = {c["verdict"] for c in checks}
    if not checks:
        verdict = NOT_MEASURED
    elif NOT_MET in verdicts:
        verdict = NOT_MET
    elif NOT_MEASURED in verdicts:
        verdict = NOT_MEASURED
    else:
        verdict = MET
    goal: dict[str, Any] = {"description": description, "verdict": verdict, "checks": checks}
    if not checks:
        goal["reason"] = empty_reason
    return goal


def goal_a(summary: pd.DataFrame, base: pd.Series | None) -> dict[str, Any]:
    """Filter pruning at 50 % keeps >= 90 % of the baseline mAP after fine-tuning, per scope."""
    description = (
        f"filter pruning at {FILTER_GOAL_RATIO} % after fine-tuning keeps >= "
        f"{100 * MAP_KEEP:g} % of the baseline mAP (each filter scope)"
    )
    base_map = row_value(base, "mAP")
    # A criterion control ("backbone:random") is there to be beaten, not to meet the goal.
    is_filter = summary["kind"].eq("filter") & ~summary["scope"].str.contains(":", regex=False)
    at_goal = (
        is_filter & summary["finetuned"].astype(bool) & ratio_values(summary).eq(FILTER_GOAL_RATIO)
    )
    checks = []
    for scope in sorted(summary.loc[is_filter, "scope"].unique()):
        label = scope or "(scope not recorded)"
        rows = summary[at_goal & summary["scope"].eq(scope)]
        if rows.empty:
            reason = f"no fine-tuned filter row at ratio {FILTER_GOAL_RATIO} for this scope"
            checks.append(_judge(label, {"baseline_mAP": base_map}, None, reason))
        for variant, value in zip(rows["variant"], rows["mAP"].astype(float), strict=True):
            measured = {
                "variant": variant,
                "mAP": value,
                "baseline_mAP": base_map,
                "map_retained": safe_ratio(value, base_map),
                "required": MAP_KEEP,
            }
            if _missing(value, base_map):
                checks.append(_judge(label, measured, None, "mAP or baseline mAP missing"))
            else:
                # A share of nothing: an untrained baseline cannot show what pruning keeps.
                passed = value >= MAP_KEEP * base_map if base_map > 0 else None
                checks.append(_judge(label, measured, passed, "baseline mAP is 0"))
    return _goal(description, checks, "no filter-pruned rows in the summary")


def _row_checks(
    subjects: pd.Series, measured: pd.DataFrame, passed: pd.Series, reason: str
) -> list[dict[str, Any]]:
    """One check per row of ``measured``: not measured (for ``reason``) where a number in the row
    is missing, else met where ``passed``."""
    complete = measured.select_dtypes("number").notna().all(axis=1)
    rows = zip(subjects, measured.to_dict("records"), passed, complete, strict=True)
    return [_judge(str(s), row, bool(ok) if full else None, reason) for s, row, ok, full in rows]


def goal_b(
    summary: pd.DataFrame,
    base: pd.Series | None,
    latency: pd.Series | None = None,
    source: str = "summary",
) -> dict[str, Any]:
    """Latency falls by at least 0.8x the FLOPs fall, for every filter variant.

    ``latency`` is each row's median latency in ms (default: the summary's); ``source`` names it.
    """
    description = (
        f"latency falls by >= {LATENCY_SHARE:g}x the fraction FLOPs fall, each filter variant "
        f"({source} latency)"
    )
    derived = derived_numbers(summary, base, latency)
    base_latency = math.nan if base is None else derived.loc[base.name, "latency_ms_median"]
    numbers = pd.DataFrame(
        {
            "gmacs": derived["gmacs"],
            "baseline_gmacs": row_value(base, "gmacs"),
            "latency_ms": derived["latency_ms_median"],
            "baseline_latency_ms": float(base_latency),
            "flops_reduction": derived["flops_reduction"],
            "latency_reduction": derived["latency_reduction"],
            "required_latency_reduction": LATENCY_SHARE * derived["flops_reduction"],
        }
    )[summary["kind"].eq("filter")]
    passed = numbers["latency_reduction"] >= numbers["required_latency_reduction"]
    reason = "GMACs or latency (or baseline) missing"
    checks = _row_checks(summary.loc[numbers.index, "variant"], numbers, passed, reason)
    return _goal(description, checks, "no filter-pruned rows in the summary")


def goal_c(summary: pd.DataFrame) -> dict[str, Any]:
    """Scope backbone+ffn cuts more FLOPs than backbone at every ratio both have (zero-shot).

    Two rows of the same scope and ratio (two methods): every wide/narrow pair is compared.
    """
    description = (
        f"filter scope {SCOPE_WIDE} has fewer GMACs than {SCOPE_NARROW} at equal ratio "
        "(zero-shot rows, every ratio both scopes have)"
    )
    zero_shot = summary[
        summary["kind"].eq("filter") & ~summary["finetuned"].astype(bool) & summary["ratio"].notna()
    ]
    columns = ["ratio", "variant", "gmacs"]
    narrow = zero_shot.loc[zero_shot["scope"].eq(SCOPE_NARROW), columns]
    wide = zero_shot.loc[zero_shot["scope"].eq(SCOPE_WIDE), columns]
    pairs = wide.merge(narrow, on="ratio", suffixes=("_wide", "_narrow"))
    pairs = pairs.sort_values("ratio", kind="stable").reset_index(drop=True)
    measured = pd.DataFrame(
        {
            "ratio": pairs["ratio"].astype(int),
            f"gmacs_{SCOPE_WIDE}": pairs["gmacs_wide"].astype(float),
            f"gmacs_{SCOPE_NARROW}": pairs["gmacs_narrow"].astype(float),
            "variants": pairs[["variant_wide", "variant_narrow"]].values.tolist(),
        }
    )
    passed = pairs["gmacs_wide"] < pairs["gmacs_narrow"]
    checks = _row_checks("r" + measured["ratio"].astype(str), measured, passed, "GMACs missing")
    goal = _goal(
        description,
        checks,
        f"no ratio has zero-shot filter rows of both scopes {SCOPE_NARROW} and {SCOPE_WIDE}",
    )
    unpaired = sorted(int(r) for r in set(narrow["ratio"]) ^ set(wide["ratio"]))
    if unpaired:
        goal["unpaired_ratios"] = unpaired
    return goal


def goal_d(summary: pd.DataFrame) -> dict[str, Any]:
    """Sparse checkpoint <= 1.1x its bound (every variant) and, at >= 90 % weight pruning,
    >= 6x smaller than the dense checkpoint."""
    description = (
        f"sparse checkpoint <= {SPARSE_BOUND_SLACK:g}x its bound (every variant); at weight "
        f"ratio >= {WEIGHT_HIGH_RATIO} % it is >= {DENSE_OVER_SPARSE_MIN:g}x smaller than dense"
    )
    sizes = size_numbers(summary)
    over = sizes[["sparse_mb", "sparse_bound_mb", "sparse_over_bound"]].assign(
        required_max=SPARSE_BOUND_SLACK
    )
    passed = over["sparse_over_bound"] <= SPARSE_BOUND_SLACK
    reason = "sparse_mb or sparse_bound_mb missing"
    bound = _goal(
        f"sparse checkpoint <= {SPARSE_BOUND_SLACK:g}x its bound",
        _row_checks(summary["variant"], over, passed, reason),
        "no rows",
    )
    high = summary["kind"].eq("weight") & ratio_values(summary).ge(WEIGHT_HIGH_RATIO)
    smaller = sizes.loc[high, ["checkpoint_mb", "sparse_mb", "dense_over_sparse"]].assign(
        required_min=DENSE_OVER_SPARSE_MIN
    )
    smaller.insert(0, "ratio", summary.loc[high, "ratio"].astype(int))
    passed = smaller["dense_over_sparse"] >= DENSE_OVER_SPARSE_MIN
    reason = "checkpoint_mb or sparse_mb missing"
    dense = _goal(
        f"weight ratio >= {WEIGHT_HIGH_RATIO} %: dense/sparse >= {DENSE_OVER_SPARSE_MIN:g}",
        _row_checks(summary.loc[high, "variant"], smaller, passed, reason),
        f"no weight-pruned row at ratio >= {WEIGHT_HIGH_RATIO}",
    )
    goal = _goal(description, bound["checks"] + dense["checks"], "no rows")
    if not dense["checks"]:  # a missing high-ratio row leaves the goal unmeasured
        goal["verdict"] = NOT_MET if bound["verdict"] == NOT_MET else NOT_MEASURED
    goal["parts"] = {"bound": bound, "dense_over_sparse": dense}
    return goal


def _is_criterion_control(scopes: pd.Series) -> pd.Series:
    """The random-criterion control (scope ``<scope>:random``): a control, not a candidate."""
    return scopes.fillna("").astype(str).str.endswith(":random")


def _twin_key(summary: pd.DataFrame) -> pd.Series:
    """What a zero-shot row and its fine-tuned twin share: method (where the summary names it),
    kind, scope and ratio. The method tells two methods of one scope and ratio apart."""
    method = summary["method"] if "method" in summary else pd.Series("", index=summary.index)
    parts = [method.fillna("").astype(str), summary["kind"], summary["scope"]]
    parts.append(summary["ratio"].astype("string").fillna(""))
    return parts[0].str.cat(parts[1:], sep="|")


def _text(value: Any) -> str | None:
    """A text cell, None where it is blank or missing."""
    return None if value is None or pd.isna(value) or str(value) == "" else str(value)


def _either(*outcomes: bool | None) -> bool | None:
    """Three-valued or: True if any is True, False if all are False, else None (unknown)."""
    if any(outcome is True for outcome in outcomes):
        return True
    if all(outcome is False for outcome in outcomes):
        return False
    return None


def accuracy_check(row: pd.Series | None) -> tuple[bool | None, dict[str, Any], str]:
    """Goal e's accuracy condition on a fine-tuned row: its mAP is within the paired 95 %
    interval of its control of equal training (``delta_mAP_ci95_low <= 0 <= ..._high``) or keeps
    >= :data:`CONTROL_MAP_KEEP` of the control's mAP (``map_kept``).

    A row with training-seed replicates (``seeds``, :mod:`detrprune.report.seeds`) is judged over
    the seeds instead: the t interval of the within-seed differences and the mean mAP kept, so
    that one lucky (or unlucky) fine-tuning run does not decide.

    Beside the verdict, ``drop_over_3pct_ruled_out`` says whether the interval's lower end is
    above ``tolerated_drop`` (-3 % of the control's mAP): the verdict follows the goal's "within
    the interval", which a wider interval passes more easily, and this says whether the numbers
    also show the drop to be small.

    Returns the outcome (None: not measured), the numbers behind it and the reason when None.
    """
    if row is None:
        return None, {}, "no fine-tuned row of this method and ratio"
    over_seeds = not pd.isna(row.get("seeds", math.nan))
    columns = (
        ("delta_mAP_seed_ci95_low", "delta_mAP_seed_ci95_high", "map_kept_seed_mean")
        if over_seeds
        else ("delta_mAP_ci95_low", "delta_mAP_ci95_high", "map_kept")
    )
    low, high, kept = (float(row.get(column, math.nan)) for column in columns)
    measured = {
        "variant": row["variant"],
        "control": _text(row.get("control")),
        "mAP": float(row["mAP"]),
        "map_kept": float(row.get("map_kept", math.nan)),
        "delta_mAP": float(row.get("delta_mAP", math.nan)),
        "delta_mAP_ci95_low": float(row.get("delta_mAP_ci95_low", math.nan)),
        "delta_mAP_ci95_high": float(row.get("delta_mAP_ci95_high", math.nan)),
        "required_map_kept": CONTROL_MAP_KEEP,
        "training_seeds": int(row["seeds"]) if over_seeds else 1,
    }
    if over_seeds:
        measured |= {
            column: float(row.get(column, math.nan)) for column in ("delta_mAP_seed_mean", *columns)
        }
    within = None if _missing(low, high) else bool(low <= 0.0 <= high)
    close = None if _missing(kept) else bool(kept >= CONTROL_MAP_KEEP)
    passed = _either(within, close)
    # "Within the interval" only fails to show a drop, and a wider interval (fewer seeds, fewer
    # images) passes it more easily; whether the interval rules out a drop beyond the 3 % is
    # the stronger claim, recorded beside the verdict (an equivalence-style bound).
    mean_map, mean_delta = (
        (row.get("mAP_seed_mean", math.nan), row.get("delta_mAP_seed_mean", math.nan))
        if over_seeds
        else (row["mAP"], row.get("delta_mAP", math.nan))
    )
    tolerated_drop = -(1 - CONTROL_MAP_KEEP) * (float(mean_map) - float(mean_delta))
    measured |= {
        "tolerated_drop": tolerated_drop,
        "drop_over_3pct_ruled_out": (
            None if _missing(low, tolerated_drop) else bool(low >= tolerated_drop)
        ),
    }
    return passed, measured, "no paired interval or map_kept against the control"


def goal_e(
    summary: pd.DataFrame,
    base: pd.Series | None,
    latency: pd.Series | None = None,
    source: str = "summary",
    speedup_ci: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """The most latency-elastic structured variant with >= 40 % fewer GMACs reaches elasticity
    0.8 and keeps its accuracy against its control of equal training.

    Candidates are the filter rows with at least :data:`ELASTICITY_FLOPS_CUT` fewer GMACs than
    the baseline (not the random-criterion control); the best is the one with the highest
    measured elasticity. A zero-shot row and its fine-tuned twin share an architecture, so both
    are candidates, and the accuracy condition (:func:`accuracy_check`) always reads the
    fine-tuned row of the same method and ratio. ``latency`` is each row's median latency in ms
    (default: the summary's), ``source`` names it; ``speedup_ci`` (columns
    ``speedup_ci95_low/high``, by row) adds the elasticity's interval. The goal holds two
    checks on the best candidate (elasticity, accuracy), its ``candidates`` and
    ``latency_source``, and the best's name (``best``) and ``by_part`` (:func:`part_changes`).
    """
    description = (
        f"the filter variant with >= {100 * ELASTICITY_FLOPS_CUT:g} % fewer GMACs and the "
        f"highest latency elasticity reaches >= {ELASTICITY_MIN:g}, and its fine-tuned mAP is "
        f"within the paired 95 % interval of its control or >= {100 * CONTROL_MAP_KEEP:g} % of "
        f"it ({source} latency)"
    )
    derived = derived_numbers(summary, base, latency)
    base_latency = math.nan if base is None else float(derived.loc[base.name, "latency_ms_median"])
    is_candidate = (
        summary["kind"].eq("filter")
        & ~_is_criterion_control(summary["scope"])
        & derived["flops_reduction"].ge(ELASTICITY_FLOPS_CUT)
    )
    keys = _twin_key(summary)
    finetuned = summary["finetuned"].astype(bool)
    tuned_by_key = {
        key: label for label, key in keys[finetuned & summary["kind"].eq("filter")].items()
    }
    parts = dict(zip(summary.index, part_changes(summary, base), strict=True))

    candidates = []
    for label in summary.index[is_candidate]:
        row, numbers = summary.loc[label], derived.loc[label]
        twin = tuned_by_key.get(keys[label])
        accurate, accuracy, _ = accuracy_check(None if twin is None else summary.loc[twin])
        value = float(numbers["elasticity"])
        candidates.append(
            {
                "label": label,
                "variant": row["variant"],
                "scope": row["scope"],
                "ratio": None if pd.isna(row["ratio"]) else int(row["ratio"]),
                "finetuned": bool(row["finetuned"]),
                "flops_reduction": float(numbers["flops_reduction"]),
                "latency_reduction": float(numbers["latency_reduction"]),
                "elasticity": value,
                "elasticity_met": None if _missing(value) else bool(value >= ELASTICITY_MIN),
                "accuracy_variant": accuracy.get("variant"),
                "accuracy_met": accurate,
            }
        )
    goal_extra: dict[str, Any] = {"latency_source": source}
    measured = [c for c in candidates if not _missing(c["elasticity"])]
    if not candidates:
        goal = _goal(
            description,
            [],
            f"no filter row with >= {100 * ELASTICITY_FLOPS_CUT:g} % fewer GMACs than the "
            "baseline (or no baseline GMACs)",
        )
    elif not measured:
        reason = f"no candidate's {source} latency (or the baseline's) is measured"
        check = _judge("elasticity", {"candidates": len(candidates)}, None, reason)
        goal = _goal(description, [check], "")
    else:
        best = max(measured, key=lambda c: c["elasticity"])  # first of equals, in table order
        label = best["label"]
        numbers = derived.loc[label]
        elastic = {
            "variant": best["variant"],
            "scope": best["scope"],
            "ratio": best["ratio"],
            "finetuned": best["finetuned"],
            "gmacs": float(numbers["gmacs"]),
            "baseline_gmacs": row_value(base, "gmacs"),
            "flops_reduction": best["flops_reduction"],
            "latency_ms": float(numbers["latency_ms_median"]),
            "baseline_latency_ms": base_latency,
            "latency_reduction": best["latency_reduction"],
            "elasticity": best["elasticity"],
            "required": ELASTICITY_MIN,
        }
        if speedup_ci is not None and label in speedup_ci.index:
            low, high = (
                float(speedup_ci.loc[label, f"speedup_ci95_{end}"]) for end in ("low", "high")
            )
            elastic.update(
                speedup=float(numbers["speedup"]),
                speedup_ci95_low=low,
                speedup_ci95_high=high,
                elasticity_ci95_low=speedup_to_elasticity(low, best["flops_reduction"]),
                elasticity_ci95_high=speedup_to_elasticity(high, best["flops_reduction"]),
            )
        twin = tuned_by_key.get(keys[label])
        accurate, accuracy, reason = accuracy_check(None if twin is None else summary.loc[twin])
        checks = [
            _judge(f"elasticity {best['variant']}", elastic, best["elasticity_met"], ""),
            _judge(
                f"accuracy {accuracy.get('variant', best['variant'])}", accuracy, accurate, reason
            ),
        ]
        goal = _goal(description, checks, "")
        goal_extra.update(best=best["variant"], by_part=parts[label])
    for candidate in candidates:
        del candidate["label"]  # the table's index label: not part of the record
    goal.update(goal_extra, candidates=candidates)
    return goal
