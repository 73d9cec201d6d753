"""The pruning study's measured goals, checked on the summary table (``results/summary.csv``).

Pure functions over the summary as a :class:`pandas.DataFrame` (:func:`read_summary`), behind
``bench/pruning_goals.py``:

a. filter pruning at 50 % keeps >= 90 % of the baseline mAP after fine-tuning (per scope; the
   random-criterion control, scope ``<scope>:random``, is not held to it);
b. CPU latency falls by at least 0.8x the fraction FLOPs fall (every filter variant);
c. filter scope ``backbone+ffn`` cuts more FLOPs than ``backbone`` at equal ratio (zero-shot);
d. every sparse checkpoint is <= 1.1x its information bound, and at >= 90 % weight pruning it is
   >= 6x smaller than the dense checkpoint.

A goal's verdict is ``met``, ``not met`` or ``not measured`` (a row or column the summary lacks):
a measurement, not an assertion. Rows are keyed on the ``kind`` / ``scope`` / ``ratio`` /
``finetuned`` columns, never on the user-chosen method name. Nothing here imports torch: the
re-timing lives in :mod:`detrprune.evaluate.retime`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Goal thresholds.
FILTER_GOAL_RATIO = 50  # goal a: the filter ratio (percent) checked after fine-tuning
MAP_KEEP = 0.90  # goal a: share of the baseline mAP to keep
LATENCY_SHARE = 0.80  # goal b: latency must fall by this share of the FLOPs fall
SCOPE_NARROW, SCOPE_WIDE = "backbone", "backbone+ffn"  # goal c: the filter scopes compared
SPARSE_BOUND_SLACK = 1.10  # goal d: sparse_mb <= this x sparse_bound_mb
WEIGHT_HIGH_RATIO = 90  # goal d: weight ratio (percent, and above) for the dense/sparse check
DENSE_OVER_SPARSE_MIN = 6.0  # goal d: checkpoint_mb / sparse_mb at that ratio

# As copied into the JSON record.
THRESHOLDS: dict[str, float] = {
    "filter_goal_ratio": FILTER_GOAL_RATIO,
    "map_keep": MAP_KEEP,
    "latency_share": LATENCY_SHARE,
    "sparse_bound_slack": SPARSE_BOUND_SLACK,
    "weight_high_ratio": WEIGHT_HIGH_RATIO,
    "dense_over_sparse_min": DENSE_OVER_SPARSE_MIN,
}

MET, NOT_MET, NOT_MEASURED = "met", "not met", "not measured"

# Columns kept as text (stripped); ``finetuned`` is read as a truth value.
TEXT_COLUMNS = ("variant", "method", "kind", "scope", "latency_device", "gpu_latency_device")
TRUE_WORDS = ("true", "1", "yes", "t")
# Numeric columns the goals read: always in the table (NaN when the file lacks them), and a cell
# that is neither blank nor a number is an error. Other columns are numbers or NaN.
GOAL_COLUMNS = (
    "ratio",
    "mAP",
    "gmacs",
    "latency_ms_median",
    "checkpoint_mb",
    "sparse_mb",
    "sparse_bound_mb",
)
# Old summaries (before ``kind`` existed) named the kind in ``method``.
KNOWN_KINDS = ("baseline", "filter", "weight")
# pycocotools writes -1 for an AP it could not compute: that is "missing", not a score.
AP_COLUMNS = ("mAP", "mAP50", "mAP75", "kitti_mAP_moderate")


class SummaryError(ValueError):
    """The summary file is missing or unreadable, or an input ``--retime`` needs is missing."""


# --------------------------------------------------------------------------------------------
# the summary table
# --------------------------------------------------------------------------------------------


def read_summary(path: Path) -> pd.DataFrame:
    """Read ``summary.csv`` into a table with one row per evaluated model.

    Only ``variant`` and one of ``kind`` / ``method`` are required. Without a ``kind`` column, a
    ``method`` named ``baseline``, ``filter`` or ``weight`` (the format before ``kind`` existed)
    gives it. The table has the :data:`TEXT_COLUMNS` the file has plus ``kind``, ``scope`` and
    ``latency_device`` as text, ``finetuned`` as bool, ``ratio`` as nullable ``Int64`` and every
    other column (:data:`GOAL_COLUMNS` always) as float, NaN where missing; a negative AP is NaN.

    Raises:
        SummaryError: a one-line message naming ``path``: missing/unreadable file, no header, no
            rows, a required column missing, an empty ``variant`` or a bad number in a goal
            column (with its line, counting the header as line 1).
    """
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except FileNotFoundError as exc:
        raise SummaryError(f"{path}: no such file (run the workflow first: make demo)") from exc
    except pd.errors.EmptyDataError as exc:
        raise SummaryError(f"{path}: empty file, expected a CSV header") from exc
    except (OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        reason = " ".join(str(exc).split())  # the C parser's messages end in a newline
        raise SummaryError(f"{path}: cannot read the summary ({reason})") from exc
    columns = list(raw.columns)
    if "variant" not in columns:
        raise SummaryError(f"{path}: missing column 'variant' (is this the summary CSV?)")
    if "kind" not in columns and "method" not in columns:
        raise SummaryError(f"{path}: missing column 'kind' (and no 'method' to derive it from)")
    if raw.empty:
        raise SummaryError(f"{path}: no rows")
    raw = raw.reset_index(drop=True).apply(lambda column: column.str.strip())

    def text(column: str) -> pd.Series:
        return raw[column] if column in raw else pd.Series("", index=raw.index, dtype=str)

    def line(position: int) -> int:
        return position + 2  # the header is line 1

    empty = raw.index[raw["variant"] == ""]
    if len(empty):
        raise SummaryError(f"{path}: line {line(empty[0])} has an empty 'variant'")
    table = raw[[c for c in TEXT_COLUMNS if c in raw]].copy()
    if "kind" not in raw:
        method = text("method")
        table["kind"] = method.where(method.isin(KNOWN_KINDS), "")
    for column in ("scope", "latency_device"):
        table[column] = text(column)
    table["finetuned"] = text("finetuned").str.lower().isin(TRUE_WORDS)
    numeric = [c for c in columns if c not in TEXT_COLUMNS and c != "finetuned"]
    for column in numeric + [c for c in GOAL_COLUMNS if c not in numeric]:
        cells = text(column)
        numbers = pd.to_numeric(cells, errors="coerce").astype(float)
        if column in GOAL_COLUMNS:
            bad = raw.index[numbers.isna() & (cells != "") & (cells.str.lower() != "nan")]
            if len(bad):
                raise SummaryError(
                    f"{path}: line {line(bad[0])}, column '{column}': "
                    f"{cells[bad[0]]!r} is not a number"
                )
        table[column] = numbers.mask(numbers < 0) if column in AP_COLUMNS else numbers
    # a percentage: 20.0 (or 20.5, as int() did) is ratio 20; an infinite one is missing
    table["ratio"] = np.trunc(table["ratio"].where(np.isfinite(table["ratio"]))).astype("Int64")
    return table


def baseline_row(summary: pd.DataFrame) -> pd.Series | None:
    """The baseline (kind ``baseline``, not fine-tuned if there is such a row), or None.

    The row keeps its index label as ``name``, so a per-row Series can be looked up for it.
    """
    candidates = summary[summary["kind"].eq("baseline")]
    plain = candidates[~candidates["finetuned"].astype(bool)]
    chosen = plain if not plain.empty else candidates
    return None if chosen.empty else chosen.iloc[0]


def _at(row: pd.Series | None, column: str) -> float:
    """``row[column]`` as a float; NaN without a row."""
    return math.nan if row is None else float(row[column])


def _ratios(summary: pd.DataFrame) -> pd.Series:
    """The ``ratio`` column as floats (NaN where missing), for comparisons."""
    return summary["ratio"].astype("Float64").astype(float)


# --------------------------------------------------------------------------------------------
# derived numbers
# --------------------------------------------------------------------------------------------


def safe_ratio(numerator: Any, denominator: Any) -> Any:
    """``numerator / denominator``, NaN where either is missing or the denominator is not > 0.

    Each side is a number or a Series (the result is a Series if either is).
    """
    if isinstance(denominator, pd.Series):
        return numerator / denominator.where(denominator > 0)
    return numerator / (denominator if denominator > 0 else math.nan)


def gmacs_per_second(gmacs: Any, latency_ms: Any) -> Any:
    """Achieved throughput: GMACs of one image over its latency in seconds."""
    return safe_ratio(gmacs, latency_ms / 1000.0)


def derived_numbers(
    summary: pd.DataFrame, base: pd.Series | None, latency: pd.Series | None = None
) -> pd.DataFrame:
    """Per-variant numbers relative to the baseline, one row per summary row.

    ``latency`` is each row's median latency in ms (default: the summary's; pass the re-timed
    ones instead); the baseline's is taken from it too. ``flops_reduction`` and
    ``latency_reduction`` are fractions (0.3 = 30 % fewer); ``speedup`` is baseline latency /
    latency; ``map_retained`` is the share of the baseline mAP kept.
    """
    latency = summary["latency_ms_median"] if latency is None else latency.astype(float)
    base_latency = math.nan if base is None else float(latency.loc[base.name])
    gmacs = summary["gmacs"]
    return pd.DataFrame(
        {
            "gmacs": gmacs,
            "flops_reduction": 1.0 - safe_ratio(gmacs, _at(base, "gmacs")),
            "latency_ms_median": latency,
            "latency_reduction": 1.0 - safe_ratio(latency, base_latency),
            "speedup": safe_ratio(base_latency, latency),
            "gmacs_per_s": gmacs_per_second(gmacs, latency),
            "map_retained": safe_ratio(summary["mAP"], _at(base, "mAP")),
        },
        index=summary.index,
    )


def size_numbers(summary: pd.DataFrame) -> pd.DataFrame:
    """Sparse checkpoint size against its information bound and against the dense file."""
    sizes = summary[["checkpoint_mb", "sparse_mb", "sparse_bound_mb"]].astype(float)
    sizes["sparse_over_bound"] = safe_ratio(sizes["sparse_mb"], sizes["sparse_bound_mb"])
    sizes["dense_over_sparse"] = safe_ratio(sizes["checkpoint_mb"], sizes["sparse_mb"])
    return sizes


# --------------------------------------------------------------------------------------------
# goals
# --------------------------------------------------------------------------------------------


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
    base_map = _at(base, "mAP")
    # A criterion control ("backbone:random") is there to be beaten, not to meet the goal.
    is_filter = summary["kind"].eq("filter") & ~summary["scope"].str.contains(":", regex=False)
    at_goal = is_filter & summary["finetuned"].astype(bool) & _ratios(summary).eq(FILTER_GOAL_RATIO)
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
            "baseline_gmacs": _at(base, "gmacs"),
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
    high = summary["kind"].eq("weight") & _ratios(summary).ge(WEIGHT_HIGH_RATIO)
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


def speedup_interval(
    baseline_rounds: Sequence[Sequence[float]],
    variant_rounds: Sequence[Sequence[float]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the speedup (baseline median / variant median) from an
    interleaved re-timing: whole rounds are drawn with replacement, the same ones for both
    models, so drift between rounds stays paired; each draw pools the drawn rounds' runs.
    """
    base = np.asarray(baseline_rounds, dtype=np.float64)
    variant = np.asarray(variant_rounds, dtype=np.float64)
    if base.ndim != 2 or base.shape[0] != variant.shape[0] or base.shape[0] < 1:
        raise ValueError(
            f"speedup interval: rounds of runs must pair up, got shapes {base.shape} and "
            f"{variant.shape}"
        )
    draws = np.random.default_rng(seed).integers(0, base.shape[0], size=(resamples, base.shape[0]))
    pooled_base = np.median(base[draws].reshape(resamples, -1), axis=1)
    pooled_variant = np.median(variant[draws].reshape(resamples, -1), axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(pooled_base / pooled_variant, [tail, 100 - tail])
    return float(low), float(high)
