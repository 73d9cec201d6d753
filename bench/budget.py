"""The workflow's own cost, from the benchmark file Snakemake writes for every compute job.

Machines of the same kind differ by up to 2x in speed, so the cost is stated in units of the
run's own work: one baseline training iteration (``train_baseline``'s wall time divided by its
iterations). The study's budget is a number of those units (:data:`DEMO_BUDGET_ITERATIONS` for
the embedded default), whatever the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

DEMO_BUDGET_ITERATIONS = 2500
BASELINE_RULE = "train_baseline"


class BudgetError(ValueError):
    """Benchmark files that cannot be turned into a cost."""


def read_benchmarks(root: Path) -> pd.DataFrame:
    """One row per job: ``rule`` (the benchmark's first path part under ``root``), ``job``
    (its path there) and ``seconds`` (wall time; the mean when a job was repeated)."""
    rows = []
    for path in sorted(Path(root).rglob("*.tsv")):
        relative = path.relative_to(root)
        try:
            table = pd.read_csv(path, sep="\t")
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise BudgetError(f"{path}: cannot read the benchmark ({exc})") from exc
        if "s" not in table.columns or table.empty:
            raise BudgetError(f"{path}: no 's' (seconds) column with a value")
        rule = relative.parts[0].removesuffix(".tsv")
        rows.append(
            {
                "rule": rule,
                "job": relative.with_suffix("").as_posix(),
                "seconds": float(table["s"].mean()),
            }
        )
    if not rows:
        raise BudgetError(f"{root}: no benchmark files (run the workflow first)")
    return pd.DataFrame(rows)


def cost_by_rule(
    jobs: pd.DataFrame, baseline_iterations: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-rule job count, total and median seconds and total in baseline iterations, largest
    first; and the totals (seconds, baseline iterations, seconds per baseline iteration)."""
    if baseline_iterations < 1:
        raise BudgetError(f"baseline iterations must be >= 1, got {baseline_iterations}")
    baseline = jobs.loc[jobs["rule"] == BASELINE_RULE, "seconds"]
    if baseline.empty:
        raise BudgetError(f"no {BASELINE_RULE} benchmark: the unit of cost is its iteration")
    per_iteration = float(baseline.iloc[0]) / baseline_iterations
    rules = (
        jobs.groupby("rule")["seconds"]
        .agg(jobs="count", seconds="sum", median_seconds="median")
        .reset_index()
    )
    rules["baseline_iterations"] = rules["seconds"] / per_iteration
    rules["share"] = rules["seconds"] / rules["seconds"].sum()
    rules = rules.sort_values("seconds", ascending=False, kind="stable").reset_index(drop=True)
    totals = {
        "seconds": float(rules["seconds"].sum()),
        "seconds_per_baseline_iteration": per_iteration,
        "baseline_iterations": float(rules["baseline_iterations"].sum()),
        "jobs": int(rules["jobs"].sum()),
    }
    return rules, totals
