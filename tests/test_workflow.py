"""The real Snakemake DAG on the micro config: executed to the PDF, then incremental reruns."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from detrprune.report import SUMMARY_COLUMNS

from .conftest import micro_config, planned_jobs, run_snakemake

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_snakemake(workdir, "--cores", "2", *args, timeout=1500)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("study")
    (workdir / "config.yaml").write_text(yaml.safe_dump(micro_config()))
    run = snakemake(workdir, "results/report.pdf")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return workdir


def test_study_runs_to_the_report(study):
    from pypdf import PdfReader

    summary = pd.read_csv(study / "results" / "summary.csv")
    assert list(summary.columns[: len(SUMMARY_COLUMNS)]) == SUMMARY_COLUMNS
    rows = set(zip(summary["method"], summary["ratio"], strict=True))
    assert rows == {("baseline", 0), ("filter", 20), ("filter", 50), ("weight", 30), ("weight", 70)}
    baseline = summary[summary["method"] == "baseline"].iloc[0]
    filter50 = summary[(summary["method"] == "filter") & (summary["ratio"] == 50)].iloc[0]
    weight70 = summary[(summary["method"] == "weight") & (summary["ratio"] == 70)].iloc[0]
    assert (
        filter50["gmacs"] < baseline["gmacs"]
        and filter50["params_total"] < baseline["params_total"]
    )
    assert weight70["params_total"] == baseline["params_total"]
    assert weight70["params_nonzero"] < 0.5 * baseline["params_nonzero"]
    assert weight70["compression_ratio"] > 2
    assert (summary["latency_ms_median"] > 0).all()
    assert len(PdfReader(study / "results" / "report.pdf").pages) >= 3
    for name in ("map_vs_ratio", "gmacs_vs_ratio", "latency_vs_ratio", "accuracy_vs_latency"):
        assert (study / "results" / "plots" / f"{name}.png").stat().st_size > 0


def test_every_rule_wrote_a_log(study):
    logs = {p.relative_to(study / "logs").as_posix() for p in (study / "logs").rglob("*.log")}
    assert {
        "synthesize_kitti.log",
        "extract_kitti.log",
        "kitti_to_coco.log",
        "train_baseline.log",
        "evaluate/baseline.log",
        "prune/filter/r20.log",
        "prune/weight/r70.log",
        "aggregate.log",
        "report.log",
    } <= logs


def test_pruned_checkpoints_reload_weights_only(study):
    from detrprune.checkpoint import load_detector
    from detrprune.pruning import count_parameters

    for variant in ("filter/r50", "weight/r30"):
        model, _, meta = load_detector(study / "results" / "prune" / variant / "model.pth")
        assert meta["variant"] == variant.replace("/", "_")
        assert count_parameters(model) > 0


def test_unchanged_config_has_nothing_to_do(study):
    run = snakemake(study, "-n", "results/report.pdf")
    assert run.returncode == 0, run.stderr[-3000:]
    assert planned_jobs(run) == {}


def test_changing_one_ratio_rebuilds_only_that_target(study):
    config = micro_config()
    config["pruning"]["filter"]["ratios"] = [20, 40]
    (study / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        run = snakemake(study, "-n")
        assert run.returncode == 0, run.stderr[-3000:]
        assert planned_jobs(run) == {
            "prune": 1,
            "evaluate": 1,
            "aggregate": 1,
            "report": 1,
            "all": 1,
        }
        text = run.stdout + run.stderr
        assert "results/prune/filter/r40/model.pth" in text
        assert "results/eval/filter/r40/metrics.json" in text
    finally:
        (study / "config.yaml").write_text(yaml.safe_dump(micro_config()))


def test_metrics_record_parts_sparsity_and_provenance(study):
    import json

    baseline = json.loads((study / "results/eval/baseline/metrics.json").read_text())
    weight = json.loads((study / "results/eval/weight/r70/metrics.json").read_text())
    parts = ("backbone", "neck", "encoder", "decoder", "head", "other")
    assert sum(baseline[f"gmacs_{p}"] for p in parts) == pytest.approx(baseline["gmacs"])
    assert baseline["sparsity_backbone"] < 0.01
    assert weight["sparsity_backbone"] == pytest.approx(0.7, abs=0.01)
    # KITTI-style AP comes from the same predictions as COCO AP; NaN where no valid GT.
    assert {f"kitti_AP_{c}_moderate" for c in ("Car", "Pedestrian", "Cyclist")} <= set(weight)
    assert "kitti_mAP_moderate" in baseline
    # Zeroed weights shrink the compact sparse checkpoint, not the dense one.
    assert weight["sparse_mb"] < 0.5 * weight["checkpoint_mb"]
    assert weight["sparse_mb"] <= 1.1 * weight["sparse_bound_mb"]
    summary = pd.read_csv(study / "results" / "summary.csv")
    assert {"kitti_mAP_moderate", "sparse_mb", "gmacs_backbone"} <= set(summary.columns)
    provenance = weight["provenance"]
    assert provenance["packages"]["mmdet"] == "3.3.0"
    assert provenance["settings"]["evaluate"]["latency"]["runs"] == 20
    assert provenance["threads"] == 2 and provenance["device"] == weight["latency_device"]
