"""The workflow's cost in baseline iterations (bench/budget.py, bench/demo_budget.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))  # bench/ is scripts, not a package: they import by name

from budget import BudgetError, cost_by_rule, read_benchmarks  # noqa: E402

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def benchmark(root: Path, job: str, *seconds: float) -> None:
    """A benchmark file as Snakemake writes it (one line per repeat)."""
    path = root / f"{job}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:00\t1\t1\t1\t1\t0\t0\t0\t0\n" for s in seconds))


@pytest.fixture
def benchmarks(tmp_path: Path) -> Path:
    root = tmp_path / "benchmarks"
    benchmark(root, "train_baseline", 350.0)  # 350 iterations: 1 s each
    benchmark(root, "prune/filter/r10", 20.0)
    benchmark(root, "prune/filter/r50", 30.0)
    benchmark(root, "finetune/filter/r50", 100.0)
    benchmark(root, "finetune_baseline", 110.0)
    benchmark(root, "evaluate/prune/filter/r50", 40.0, 44.0)  # repeated: the mean
    return root


def test_cost_by_rule_in_baseline_iterations(benchmarks: Path) -> None:
    jobs = read_benchmarks(benchmarks)
    assert sorted(jobs["rule"].unique()) == [
        "evaluate",
        "finetune",
        "finetune_baseline",
        "prune",
        "train_baseline",
    ]
    rules, totals = cost_by_rule(jobs, baseline_iterations=350)
    by_rule = rules.set_index("rule")
    assert by_rule.loc["prune", "jobs"] == 2 and by_rule.loc["prune", "seconds"] == 50.0
    assert by_rule.loc["evaluate", "seconds"] == 42.0
    assert rules["rule"].iloc[0] == "train_baseline"  # largest first
    assert totals["seconds_per_baseline_iteration"] == 1.0
    assert totals["baseline_iterations"] == pytest.approx(350 + 50 + 100 + 110 + 42)
    assert by_rule["share"].sum() == pytest.approx(1.0)
    # Twice as fast a machine: the same cost in baseline iterations.
    halved = jobs.assign(seconds=jobs["seconds"] / 2)
    assert cost_by_rule(halved, 350)[1]["baseline_iterations"] == totals["baseline_iterations"]


def test_errors_name_the_file_or_what_is_missing(tmp_path: Path, benchmarks: Path) -> None:
    with pytest.raises(BudgetError, match="no benchmark files"):
        read_benchmarks(tmp_path / "empty")
    (benchmarks / "train_baseline.tsv").unlink()
    with pytest.raises(BudgetError, match="no train_baseline benchmark"):
        cost_by_rule(read_benchmarks(benchmarks), 350)
    (benchmarks / "bad.tsv").write_text("x\ty\n")
    with pytest.raises(BudgetError, match=r"bad\.tsv: no 's'"):
        read_benchmarks(benchmarks)


def test_the_bench_command_prints_and_writes_the_budget(tmp_path: Path, benchmarks: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("train: {max_iters: 350}\n")
    out = tmp_path / "budget.json"
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / "demo_budget.py"), "--benchmarks", str(benchmarks)]
        + ["--config", str(config), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "6 jobs: 10.9 min = 652 baseline iterations of 1 s (budget 2500)" in run.stdout
    record = json.loads(out.read_text())
    assert record["limit"] == 2500 and record["rules"][0]["rule"] == "train_baseline"
    missing = subprocess.run(
        [sys.executable, str(REPO / "bench" / "demo_budget.py"), "--benchmarks", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
