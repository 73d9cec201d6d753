"""The goal check's results: per-variant entries, the JSON record and the printed report.

:func:`evaluate` joins the summary table's numbers (:mod:`detrprune.evaluate.analysis`) and, when
re-timed, the timings of :mod:`detrprune.evaluate.retime` into one entry per variant plus the
goals' verdicts (``bench/goals.py``); :func:`check_goals` keeps them as a :class:`GoalCheck`,
whose ``record()`` is what ``bench/pruning_goals.py`` writes as JSON and ``report()`` what it
prints (the tables by :meth:`pandas.DataFrame.to_string`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

# The sibling module's goals and thresholds. The script's folder is on sys.path when it runs.
from goals import CONTROL_MAP_KEEP, MET, NOT_MET, THRESHOLDS, goal_a, goal_b, goal_c, goal_d, goal_e

from detrprune.evaluate.analysis import (
    baseline_row,
    derived_numbers,
    part_changes,
    size_numbers,
    speedup_to_elasticity,
)
from detrprune.evaluate.latency import speedup_interval

VARIANTS_LEGEND = (
    "FLOPs chg: change vs baseline; mAP/base: share of the baseline mAP kept;\n"
    "speedup = baseline latency / latency; GMAC/s = GMACs / latency (s);\n"
    "elast = latency elasticity: latency drop / GMACs drop (1: in proportion; n/a: GMACs do not "
    "fall);\n"
    "/bound = sparse_mb / sparse_bound_mb; dense/sparse = checkpoint_mb / sparse_mb;\n"
    "n/a = not measured."
)
RETIMED_LEGEND = (
    "round medians: lowest-highest per-round median (drift); 95% low/high: the speedup's "
    "bootstrap interval over whole rounds (paired across models); "
    "lat chg: re-timed latency change vs the re-timed baseline; elast: its latency drop / GMACs "
    "drop."
)


def retimed_latency(summary: pd.DataFrame, timings: Mapping[str, Mapping[str, Any]]) -> pd.Series:
    """Each row's re-timed median latency in ms (``timings`` by variant), NaN if not re-timed."""
    medians = {variant: timing["latency_ms_median"] for variant, timing in timings.items()}
    return summary["variant"].map(medians).astype(float)


def evaluate(
    summary: pd.DataFrame, retimed: Mapping[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-variant numbers and the goals' verdicts (goal b twice when re-timed).

    ``retimed`` is :func:`detrprune.evaluate.retime.retime_summary`'s record (its ``models``:
    timings by variant). Returns one entry per row (identity, ``summary`` numbers, ``sizes``,
    ``retimed`` timing and numbers or None, and for filter rows ``by_part``: the
    :func:`~detrprune.evaluate.analysis.part_changes` behind the elasticity, else None) and the
    goals by key (``a``..``e``, ``b_retimed``). Goal e is judged on the re-timed latency when
    there is a re-timing, else on the summary's.
    """
    base = baseline_row(summary)
    timings = retimed["models"] if retimed else {}
    latency = retimed_latency(summary, timings)
    intervals = {}
    entries = []
    for label, row, numbers, sizes, renumbers, parts in zip(
        summary.index,
        summary.to_dict("records"),
        derived_numbers(summary, base).to_dict("records"),
        size_numbers(summary).to_dict("records"),
        derived_numbers(summary, base, latency).to_dict("records"),
        part_changes(summary, base),
        strict=True,
    ):
        timing = timings.get(row["variant"])
        if timing is not None and base is not None and base["variant"] in timings:
            low, high = speedup_interval(
                timings[base["variant"]]["round_times_ms"], timing["round_times_ms"]
            )
            intervals[label] = {"speedup_ci95_low": low, "speedup_ci95_high": high}
            # The elasticity is monotone in the speedup: the interval's ends map to its ends.
            reduction = renumbers["flops_reduction"]
            renumbers = {
                **renumbers,
                **intervals[label],
                "elasticity_ci95_low": speedup_to_elasticity(low, reduction),
                "elasticity_ci95_high": speedup_to_elasticity(high, reduction),
            }
        entries.append(
            {
                "variant": row["variant"],
                "kind": row["kind"],
                "scope": row["scope"],
                "ratio": None if pd.isna(row["ratio"]) else int(row["ratio"]),
                "finetuned": bool(row["finetuned"]),
                "mAP": float(row["mAP"]),
                "latency_device": row["latency_device"],
                "summary": numbers,
                "sizes": sizes,
                "retimed": None if timing is None else {**timing, **renumbers},
                "by_part": parts if row["kind"] == "filter" else None,
            }
        )
    goals = {
        "a": goal_a(summary, base),
        "b": goal_b(summary, base),
        "c": goal_c(summary),
        "d": goal_d(summary),
    }
    if retimed is not None:
        goals["b_retimed"] = goal_b(summary, base, latency, "re-timed")
        speedup_ci = pd.DataFrame.from_dict(intervals, orient="index")
        goals["e"] = goal_e(summary, base, latency, "re-timed", speedup_ci)
    else:
        goals["e"] = goal_e(summary, base)
    return entries, goals


def jsonable(value: Any) -> Any:
    """NaN -> None (JSON has no NaN), recursively through mappings, lists and tuples."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# the printed report
# --------------------------------------------------------------------------------------------


def _change(value: float) -> str:
    return f"{100 * value + 0.0:+.1f}%"  # + 0.0 turns -0.0 (an unchanged baseline) into 0.0


def _share(value: float) -> str:
    return f"{100 * value:.1f}%"


def _times(value: float) -> str:
    return f"{value:.2f}x"


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.4g}-{max(values):.4g}"


# Printed column -> entry field ("summary.gmacs": entry["summary"]["gmacs"]) and cell format.
_VARIANT_NUMBERS: dict[str, tuple[str, Callable[[float], str]]] = {
    "mAP": ("mAP", "{:.3g}".format),
    "mAP/base": ("summary.map_retained", _share),
    "GMACs": ("summary.gmacs", "{:.4g}".format),
    "FLOPs chg": ("summary.flops_reduction", _change),  # negated: a change, not a reduction
    "lat ms": ("summary.latency_ms_median", "{:.4g}".format),
    "speedup": ("summary.speedup", _times),
    "elast": ("summary.elasticity", "{:.2f}".format),
    "GMAC/s": ("summary.gmacs_per_s", "{:.4g}".format),
    "sparse MB": ("sizes.sparse_mb", "{:.3g}".format),
    "/bound": ("sizes.sparse_over_bound", _times),
    "dense/sparse": ("sizes.dense_over_sparse", _times),
}
_RETIMED_NUMBERS: dict[str, tuple[str, Callable[[float], str]]] = {
    "summary ms": ("summary.latency_ms_median", "{:.4g}".format),
    "retimed ms": ("retimed.latency_ms_median", "{:.4g}".format),
    "p90 ms": ("retimed.latency_ms_p90", "{:.4g}".format),
    "round medians": ("retimed.round_medians_ms", _spread),
    "speedup": ("retimed.speedup", _times),
    "95% low": ("retimed.speedup_ci95_low", _times),
    "95% high": ("retimed.speedup_ci95_high", _times),
    "lat chg": ("retimed.latency_reduction", _change),  # negated, as FLOPs chg
    "elast": ("retimed.elasticity", "{:.2f}".format),
    "GMAC/s": ("retimed.gmacs_per_s", "{:.4g}".format),
}


def _flat(entries: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> pd.DataFrame:
    """``entries`` as a flat table of ``fields`` (nested ones dotted), NaN where one lacks it."""
    return pd.json_normalize(list(entries)).reindex(columns=list(fields))


def variants_table(entries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The printed per-variant table: its column names, numbers unformatted (NaN: n/a)."""
    flat = _flat(entries, ["variant", "kind", "scope", "ratio", "finetuned", "mAP"])
    table = pd.DataFrame(
        {
            "variant": flat["variant"],
            "kind": flat["kind"].replace("", "?"),
            "scope": flat["scope"].replace("", "-"),
            "ratio": flat["ratio"].astype(float),
            "ft": flat["finetuned"].map({True: "yes", False: "no"}),
        }
    )
    numbers = _flat(entries, [field for field, _ in _VARIANT_NUMBERS.values()]).astype(float)
    table[list(_VARIANT_NUMBERS)] = numbers.to_numpy()
    table["FLOPs chg"] = -table["FLOPs chg"]
    return table


def retimed_table(entries: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The printed re-timing table (baseline and re-timed rows), numbers unformatted."""
    rows = [e for e in entries if e["kind"] == "baseline" or e["retimed"]]
    flat = _flat(rows, ["variant", *(field for field, _ in _RETIMED_NUMBERS.values())])
    table = pd.DataFrame({"variant": flat["variant"]})
    for column, (field, _) in _RETIMED_NUMBERS.items():
        table[column] = flat[field] if column == "round medians" else flat[field].astype(float)
    table["lat chg"] = -table["lat chg"]
    return table


def _to_text(table: pd.DataFrame, numbers: Mapping[str, tuple[str, Callable]]) -> str:
    """``table`` as text: each number in its column's format, "n/a" where it is missing."""
    if table.empty:
        return "(no rows)"
    cells = table.copy()
    for column, (_, cell) in {"ratio": ("", "{:.0f}".format), **numbers}.items():
        if column in cells:
            text = table[column].map(cell, na_action="ignore").astype(object)
            cells[column] = text.where(text.notna(), "n/a")
    if "retimed ms" in cells:
        cells.loc[table["retimed ms"].isna(), "retimed ms"] = "not measured"
    return cells.to_string(index=False)


def _value(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _check_lines(checks: Sequence[Mapping[str, Any]], indent: str) -> list[str]:
    lines = []
    for check in checks:
        measured = ", ".join(f"{k}={_value(v)}" for k, v in check["measured"].items())
        reason = f" ({check['reason']})" if "reason" in check else ""
        lines.append(f"{indent}{check['verdict']:<12} {check['subject']}: {measured}{reason}")
    return lines


def _amount(value: float, digits: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def part_lines(variant: str, by_part: Mapping[str, Mapping[str, Any]], indent: str) -> list[str]:
    """Where ``variant``'s elasticity comes from: one line per part, its GMACs and latency
    (the summary's ``latency_ms_<part>``) against the baseline's same part."""
    lines = [f"{indent}by part, baseline -> {variant} (latency: the summary's, per part):"]
    names = {
        part: part if n["gmacs_part"] == part else f"{part} (GMACs {n['gmacs_part']})"
        for part, n in by_part.items()
    }
    width = max(len(name) for name in names.values())
    for part, numbers in by_part.items():
        values = {k: math.nan if v is None else v for k, v in numbers.items()}
        name = names[part]
        gmacs = f"{_amount(values['baseline_gmacs'], 3)} -> {_amount(values['gmacs'], 3)}"
        latency = (
            f"{_amount(values['baseline_latency_ms'], 2)} -> {_amount(values['latency_ms'], 2)} ms"
        )
        line = f"{indent}    {name:<{width}}  GMACs {gmacs}"
        if not math.isnan(values["gmacs_reduction"]):
            line += f" ({_change(-values['gmacs_reduction'])})"
        line += f", latency {latency}"
        if not math.isnan(values["latency_reduction"]):
            line += f" ({_change(-values['latency_reduction'])})"
        if not math.isnan(values["elasticity"]):
            line += f", elasticity {values['elasticity']:.2f}"
        lines.append(line)
    return lines


def _has_part_latency(by_part: Mapping[str, Mapping[str, Any]] | None) -> bool:
    return bool(by_part) and any(
        n["latency_ms"] is not None and not math.isnan(n["latency_ms"]) for n in by_part.values()
    )


def goal_lines(
    key: str,
    goal: Mapping[str, Any],
    by_part: Mapping[str, Mapping[str, Mapping[str, Any]] | None] | None = None,
) -> list[str]:
    """A goal's verdict, then each check with its measured numbers (by part, if it has parts).

    Goal e also lists its candidates' elasticities and explains its best candidate by model
    part. ``by_part`` (variant -> :func:`~detrprune.evaluate.analysis.part_changes` entry) adds that
    explanation under every failed check of a filter variant whose latency the summary splits
    by part (goal b).
    """
    lines = [f"goal {key}: {goal['verdict'].upper()}  -- {goal['description']}"]
    if "reason" in goal:
        lines.append(f"    not measured: {goal['reason']}")
    if "parts" in goal:
        for part in goal["parts"].values():
            lines.append(f"    {part['verdict']}: {part['description']}")
            if "reason" in part:
                lines.append(f"        not measured: {part['reason']}")
            lines += _check_lines(part["checks"], "        ")
    else:
        for check in goal["checks"]:
            lines += _check_lines([check], "    ")
            measured = check["measured"]
            if check["verdict"] == MET and measured.get("drop_over_3pct_ruled_out") is False:
                lines.append(
                    "        but the interval reaches below "
                    f"{measured['tolerated_drop']:+.3f} (-{100 * (1 - CONTROL_MAP_KEEP):.0f} % of "
                    "the control): a larger drop "
                    "is not ruled out"
                )
            variant = check["subject"]
            explained = (by_part or {}).get(variant)
            if (
                check["verdict"] == NOT_MET
                and "by_part" not in goal
                and _has_part_latency(explained)
            ):
                lines += part_lines(variant, explained, "        ")
    if goal.get("unpaired_ratios"):
        lines.append(f"    ratios with only one of the two scopes: {goal['unpaired_ratios']}")
    if goal.get("candidates"):
        shown = ", ".join(f"{c['variant']} {_value(c['elasticity'])}" for c in goal["candidates"])
        lines.append(f"    candidates' elasticity ({goal['latency_source']} latency): {shown}")
    if goal.get("by_part"):
        lines += part_lines(goal["best"], goal["by_part"], "    ")
        if not _has_part_latency(goal["by_part"]):
            lines.append("    (the summary has no latency_ms_<part> columns: latency by part n/a)")
    return lines


@dataclass(frozen=True)
class GoalCheck:
    """One check of the goals on a summary table: what :func:`evaluate` made of it."""

    summary_path: Path
    summary: pd.DataFrame
    entries: list[dict[str, Any]]
    goals: dict[str, Any]
    retimed: Mapping[str, Any] | None = None

    def record(self) -> dict[str, Any]:
        """The JSON record (NaN as None): inputs, thresholds, numbers, verdicts, timings."""
        base = baseline_row(self.summary)
        return jsonable(
            {
                "summary": str(self.summary_path),
                "baseline": None if base is None else base["variant"],
                "thresholds": THRESHOLDS,
                "variants": self.entries,
                "goals": self.goals,
                "verdicts": {key: goal["verdict"] for key, goal in self.goals.items()},
                "retime": self.retimed,
            }
        )

    def report(self) -> str:
        """The printed report: the baseline, the tables with their legends, each goal's checks."""
        base = baseline_row(self.summary)
        lines = [f"summary: {self.summary_path} ({len(self.summary)} rows)"]
        if base is None:
            lines.append(
                "no baseline row (kind 'baseline'): values relative to it are not measured"
            )
        else:
            device = base["latency_device"] or "n/a"
            lines.append(f"baseline: {base['variant']}; latency device: {device}")
        lines += ["", _to_text(variants_table(self.entries), _VARIANT_NUMBERS), VARIANTS_LEGEND]
        retimed = self.retimed
        if retimed is not None:
            lines += [
                "",
                f"re-timed in one process: {retimed['rounds']} rounds x "
                f"{retimed['runs_per_round']} runs per model, {retimed['images']} images, "
                f"{retimed['latency_device']}",
                _to_text(retimed_table(self.entries), _RETIMED_NUMBERS),
                RETIMED_LEGEND,
            ]
        lines.append("")
        by_part = {entry["variant"]: entry["by_part"] for entry in self.entries}
        for key, goal in self.goals.items():
            lines += goal_lines(key, goal, by_part)
        return "\n".join(lines)


def check_goals(
    summary_path: Path, summary: pd.DataFrame, retimed: Mapping[str, Any] | None = None
) -> GoalCheck:
    """Evaluate ``summary`` (read from ``summary_path``) and, if given, its re-timing."""
    entries, goals = evaluate(summary, retimed)
    return GoalCheck(summary_path, summary, entries, goals, retimed)
