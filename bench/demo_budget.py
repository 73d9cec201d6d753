"""The workflow's cost per rule, in seconds and in baseline training iterations.

Run after the workflow (``make demo``)::

    .venv/bin/python bench/demo_budget.py                       # benchmarks/, config.yaml
    .venv/bin/python bench/demo_budget.py --config configs/kitti.yaml --limit 0

Reads every job's Snakemake benchmark (``benchmarks/**/*.tsv``), prints one row per rule (jobs,
total and median seconds, total in baseline iterations, share) and the total against
``--limit`` (the demo's budget, 2,500 baseline iterations; 0: no limit), and writes it all as
JSON (``--out``). The unit is the run's own ``train_baseline`` time over its ``train.max_iters``,
so the figure holds on a faster or slower machine. A measurement, not a gate: exit 0 either way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

# The sibling module's cost table. The script's folder is on sys.path when it runs.
from budget import DEMO_BUDGET_ITERATIONS, BudgetError, cost_by_rule, read_benchmarks

from detrprune.jobs import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmarks", type=Path, default=Path("benchmarks"))
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--limit", type=float, default=DEMO_BUDGET_ITERATIONS)
    parser.add_argument("--out", type=Path, default=Path("results/bench/demo_budget.json"))
    args = parser.parse_args(argv)
    try:
        iterations = int(yaml.safe_load(args.config.read_text())["train"]["max_iters"])
        rules, totals = cost_by_rule(read_benchmarks(args.benchmarks), iterations)
    except (OSError, KeyError, BudgetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(rules.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    minutes = totals["seconds"] / 60
    print(
        f"\n{totals['jobs']} jobs: {minutes:.1f} min = {totals['baseline_iterations']:.0f} baseline"
        f" iterations of {totals['seconds_per_baseline_iteration']:.3g} s"
        + (f" (budget {args.limit:.0f})" if args.limit > 0 else "")
    )
    write_json({**totals, "limit": args.limit, "rules": rules.to_dict("records")}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
