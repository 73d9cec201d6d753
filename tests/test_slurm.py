"""The micro study through profiles/slurm on a real one-node SLURM cluster (tests/slurm_cluster.py).

What is checked: the compute rules (train_baseline, prune, evaluate) run as SLURM jobs and their
results equal a local run's; a job that fails on SLURM fails the run, Snakemake names its SLURM
log, and after the fix only the failed job and what depends on it are planned again.

The test cluster has no GPU (no GRES), so the `gpu` the GPU rules declare is overridden to
`gpu=0` with --set-resources (it then asks for --cpus-per-task=threads). A
--set-resources on the command line replaces the profile's whole set-resources table, so the
test re-sends the profile's own table with that one change (and memory capped to the node).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from .conftest import REPO, micro_config, planned_jobs, run_snakemake
from .slurm_cluster import NOT_OPTED_IN, opted_in, slurm_cluster

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not opted_in(), reason=NOT_OPTED_IN)]

PROFILE = REPO / "profiles" / "slurm"
# 2 + 2 ratios, zero-shot (aggregate pairs each with the baseline)
COMPUTE_RULES = {"train_baseline": 1, "prune": 4, "evaluate": 5, "time_models": 1}
DATA_RULES = ("synthesize_kitti", "extract_kitti", "kitti_to_coco", "aggregate")
# Accuracy and size: a property of the computation. Latency columns depend on the machine's load.
COMPARED = ["mAP", "mAP50", "params_total", "params_nonzero", "gmacs"]
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)\.?$", re.MULTILINE)


def slurm_config() -> dict:
    """The micro study without fine-tuning, loop and export: what is tested here is the
    executor, and each SLURM job costs seconds of scheduling."""
    config = micro_config()
    config["pruning"]["methods"] = {
        name: spec
        for name, spec in config["pruning"]["methods"].items()
        if name in ("filter", "weight")
    }
    config["pruning"]["finetune"]["enabled"] = False
    config["pruning"]["iterative"]["enabled"] = False
    config["evaluate"]["onnx"]["enabled"] = False
    return config


@pytest.fixture(scope="module")
def cluster():
    with slurm_cluster() as running:
        yield running


def profile_set_resources(env: dict[str, str], memory_mb: int) -> list[str]:
    """The profile's set-resources as CLI items, with train_baseline's GPU request removed."""
    import yte

    saved = dict(os.environ)
    os.environ.update(env)  # the profile reads DETRPRUNE_SLURM_* when it is rendered
    try:
        with open(PROFILE / "config.yaml") as handle:
            profile = yte.process_yaml(handle, require_use_yte=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    table = profile["set-resources"]
    for resources in table.values():  # the GPU rules; no GRES on the test node (docstring)
        resources["gpu"] = 0
        # A DETRPRUNE_SLURM_GPU_MODEL of the caller's shell would ask for --gpus=<model>:0.
        resources.pop("gpu_model", None)
    items = []
    for rule, resources in table.items():
        for name, value in resources.items():
            if name == "mem_mb":
                value = min(int(value), memory_mb // 2)
            items.append(f"{rule}:{name}={value}")
    return items


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def snakemake(workdir: Path, *args: str, env=None, timeout: int = 900):
    return run_snakemake(workdir, *args, timeout=timeout, env=env)


def on_slurm(cluster, workdir: Path, *args: str, timeout: int = 600):
    """snakemake --workflow-profile profiles/slurm, pointed at the test cluster's partition."""
    env = {**cluster.env, "DETRPRUNE_SLURM_PARTITION": cluster.partition}
    return snakemake(
        workdir,
        "--workflow-profile",
        str(PROFILE),
        "--cores",
        "2",  # local rules (localrules:) run on the submit host
        "--slurm-status-command",
        "squeue",  # no accounting database: sacct knows nothing
        "--slurm-no-account",
        "--slurm-keep-successful-logs",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "5",
        "--set-resources",
        *profile_set_resources(env, cluster.memory_mb),
        "--",
        *args,
        env=env,
        timeout=timeout,
    )


def submissions(run: subprocess.CompletedProcess) -> dict[str, Path]:
    """{slurm job id: slurm log} of every job the run submitted."""
    return {jobid: Path(log) for jobid, log in SUBMITTED.findall(run.stdout + run.stderr)}


def slurm_logs(workdir: Path, rule: str) -> list[Path]:
    return sorted((workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob("*.log"))


def workflow_declares_localrules() -> bool:
    sources = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    return any(re.search(r"^localrules\s*:", p.read_text(), re.MULTILINE) for p in sources)


@pytest.fixture(scope="module")
def local_study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("local")
    write_config(workdir, slurm_config())
    run = snakemake(workdir, "--cores", "2", "results/summary.csv")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return workdir


@pytest.fixture(scope="module")
def slurm_study(cluster, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm")
    write_config(workdir, slurm_config())
    started = time.monotonic()
    run = on_slurm(cluster, workdir, "results/summary.csv")
    print(f"SLURM run: {time.monotonic() - started:.0f} s")
    assert run.returncode == 0, (
        run.stdout[-3000:] + run.stderr[-6000:] + cluster.log("slurmctld")[-2000:]
    )
    return workdir, run


def test_compute_rules_ran_as_slurm_jobs(cluster, slurm_study):
    workdir, run = slurm_study
    submitted = submissions(run)
    for rule, count in COMPUTE_RULES.items():
        logs = slurm_logs(workdir, rule)
        assert len(logs) == count, (rule, logs)
        for log in logs:
            jobid = log.stem
            assert submitted.get(jobid) == log, (rule, jobid, submitted)
            assert "Finished job" in log.read_text() or "finished" in log.read_text().lower()
    # the jobs really went through this cluster's controller
    seen = cluster.run("squeue", "-h", "-t", "all", "-o", "%i %T").stdout.split("\n")
    states = dict(line.split() for line in seen if line.strip())
    for jobid in submitted:
        assert states.get(jobid) == "COMPLETED", (jobid, states)
    if workflow_declares_localrules():
        text = run.stdout + run.stderr
        for rule in DATA_RULES:
            assert f"localrule {rule}:" in text, rule
            assert slurm_logs(workdir, rule) == [], rule


def test_slurm_results_equal_a_local_run(slurm_study, local_study):
    workdir, _ = slurm_study
    on_slurm_summary = pd.read_csv(workdir / "results" / "summary.csv").set_index("variant")
    local = pd.read_csv(local_study / "results" / "summary.csv").set_index("variant")
    assert sorted(on_slurm_summary.index) == sorted(local.index)
    pd.testing.assert_frame_equal(
        on_slurm_summary.loc[local.index, COMPARED], local[COMPARED], check_exact=False, atol=1e-9
    )


def test_a_failed_slurm_job_fails_the_run_and_only_it_is_redone(cluster, slurm_study):
    workdir, _ = slurm_study
    # A real failure: the backbone's ImageNet checkpoint is no checkpoint, so train_baseline
    # (and only it: prune/evaluate never start) fails inside its SLURM job. The config stays
    # valid (the file exists).
    broken = slurm_config()
    missing = workdir / "not-an-imagenet-r18.pth"
    missing.write_bytes(b"not a checkpoint")
    broken["model"]["init"]["backbone"] = str(missing)
    write_config(workdir, broken)
    run = on_slurm(cluster, workdir, "results/summary.csv")
    text = run.stdout + run.stderr
    assert run.returncode != 0, text[-3000:]
    submitted = submissions(run)
    train_logs = [log for log in submitted.values() if log.parent.name == "rule_train_baseline"]
    assert len(train_logs) == 1, submitted
    assert set(submitted.values()) == set(train_logs)  # nothing downstream was submitted
    failed_log = train_logs[0]
    error = text.split("Error in rule train_baseline", 1)
    assert len(error) == 2, text[-3000:]
    assert str(failed_log) in error[1], error[1][:3000]
    assert failed_log.exists()
    assert (
        missing.name
        in failed_log.read_text() + (workdir / "logs" / "train_baseline.log").read_text()
    )

    write_config(workdir, slurm_config())
    dry = snakemake(workdir, "-n", "results/summary.csv")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert planned_jobs(dry) == {**COMPUTE_RULES, "aggregate": 1}
