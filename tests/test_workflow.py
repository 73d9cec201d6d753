"""The real Snakemake DAG on the micro config: executed to the PDF, then incremental reruns."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from detrprune.constants import LATENCY_PARTS
from detrprune.report.summary import SUMMARY_COLUMNS

from .conftest import micro_config, planned_jobs, run_snakemake, snakemake_command

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
    zero_shot = [
        "prune/filter/r20",
        "prune/filter/r50",
        "prune/filter_ffn/r50",
        "prune/weight/r30",
        "prune/weight/r70",
        "prune/weight_global/r50",
    ]
    expected = ["baseline", *zero_shot, *(v.replace("prune/", "finetune/") for v in zero_shot)]
    controls = ["finetune/baseline", "control/iterative"]
    assert sorted(summary["variant"]) == sorted([*expected, "iterative", *controls])
    assert summary.set_index("variant")["finetuned"].to_dict() == {
        v: v.startswith(("finetune/", "control/")) or v == "iterative"
        for v in [*expected, "iterative", *controls]
    }
    by_variant = summary.set_index("variant")
    # Every fine-tuned model is compared with the baseline fine-tuned on its schedule.
    assert by_variant.loc["finetune/filter/r50", "control"] == "finetune/baseline"
    assert by_variant.loc["iterative", "control"] == "control/iterative"
    tuned, control = by_variant.loc["finetune/filter/r50"], by_variant.loc["finetune/baseline"]
    # The micro models barely train: a control mAP of 0 leaves the share unknown (NaN).
    kept = tuned["mAP"] / control["mAP"] if control["mAP"] > 0 else float("nan")
    assert tuned["map_kept"] == pytest.approx(kept, nan_ok=True)
    assert (by_variant.loc[controls, "method"] == "baseline").all()
    # Accuracy and latency with 95 % intervals; every model but the baseline paired with its
    # control on the same resamples.
    for column in ("mAP", "mAP50", "kitti_mAP_moderate", "latency_ms"):
        low, high = summary[f"{column}_ci95_low"], summary[f"{column}_ci95_high"]
        assert (low <= high).all(), column
    assert (summary["latency_ms_ci95_low"] > 0).all()
    # Speed against the baseline timed in the same rounds (rule time_models).
    assert by_variant.loc["baseline", "speedup"] == 1.0
    assert (summary["speedup_ci95_low"] <= summary["speedup_ci95_high"]).all()
    compared = by_variant.drop(index="baseline")
    assert compared["significant"].notna().all() and compared["delta_mAP"].notna().all()
    assert pd.isna(by_variant.loc["baseline", "significant"])
    assert by_variant.loc["prune/filter_ffn/r50", "scope"] == "backbone+ffn"
    assert by_variant.loc["finetune/weight_global/r50", "kind"] == "weight"
    baseline = by_variant.loc["baseline"]
    filter50 = by_variant.loc["prune/filter/r50"]
    weight70 = by_variant.loc["prune/weight/r70"]
    assert (
        filter50["gmacs"] < baseline["gmacs"]
        and filter50["params_total"] < baseline["params_total"]
    )
    assert weight70["params_total"] == baseline["params_total"]
    assert weight70["params_nonzero"] < 0.5 * baseline["params_nonzero"]
    assert weight70["compression_ratio"] > 2
    # Fine-tuning keeps the zeros of weight pruning.
    assert by_variant.loc["finetune/weight/r70", "params_nonzero"] <= weight70["params_nonzero"]
    # The FFN hidden widths go too: less compute than backbone-only at the same ratio.
    assert by_variant.loc["prune/filter_ffn/r50", "gmacs"] < filter50["gmacs"]
    assert by_variant.loc["prune/filter_ffn/r50", "gmacs_encoder"] < filter50["gmacs_encoder"]
    assert (summary["latency_ms_median"] > 0).all()
    # ONNX of each method's final model and of the iterative result, checked against PyTorch.
    exported = summary.dropna(subset=["onnx_max_abs_diff"])
    assert sorted(exported["variant"]) == sorted(
        [
            "finetune/filter/r50",
            "finetune/filter_ffn/r50",
            "finetune/weight/r70",
            "finetune/weight_global/r50",
            "iterative",
        ]
    )
    assert (exported["onnx_max_abs_diff"] < 1e-3).all()
    assert (exported["onnx_latency_ms_median"] > 0).all()
    text = "".join(page.extract_text() for page in PdfReader(study / "results/report.pdf").pages)
    for heading in (
        "Recovery table",
        "Summary table",
        "Detail table",
        "Iterative steps",
        "iterative_steps",
        "baseline_training",
        "training: ",  # the baseline convergence verdict
    ):
        assert heading in text
    for name in (
        "map_vs_ratio",
        "gmacs_vs_ratio",
        "latency_vs_ratio",
        "accuracy_vs_latency",
        "size_vs_ratio",
        "gmacs_by_part",
        "sparsity_by_part",
        "iterative_steps",
        "baseline_training",
    ):
        assert (study / "results" / "plots" / f"{name}.png").stat().st_size > 0


def test_iterative_loop_steps_and_kept_model(study):
    from detrprune.prune.iterative import per_step_ratio
    from detrprune.train.checkpoint import load_detector

    steps = pd.read_csv(study / "results" / "iterative" / "steps.csv")
    assert list(steps["step"]) == [1, 2]  # max_map_drop 1.0: never stops early
    assert steps["step_ratio"].tolist() == pytest.approx([per_step_ratio(0.5, 2)] * 2, rel=1e-5)
    assert steps["cumulative_ratio"].iloc[-1] == pytest.approx(0.5, rel=1e-5)
    assert steps["gmacs"].iloc[1] < steps["gmacs"].iloc[0]
    assert steps["selected"].tolist() == [False, True]
    model, _, meta = load_detector(study / "results" / "iterative" / "model.pth")
    assert meta["variant"] == "iterative" and meta["iterative_step"] == 2
    assert meta["ratio"] == 50 and meta["finetuned"] is True


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
        "finetune/filter_ffn/r50.log",
        "iterative.log",
        "finetune/baseline.log",
        "control/iterative.log",
        "export_onnx/iterative.log",
        "aggregate.log",
        "report.log",
    } <= logs


def test_pruned_checkpoints_reload_weights_only(study):
    from detrprune.prune.counting import count_parameters
    from detrprune.train.checkpoint import load_detector

    for variant in ("prune/filter/r50", "finetune/filter_ffn/r50", "finetune/weight/r30"):
        model, _, meta = load_detector(study / "results" / variant / "model.pth")
        assert meta["variant"] == variant
        assert count_parameters(model) > 0


def test_unchanged_config_has_nothing_to_do(study):
    run = snakemake(study, "-n", "results/report.pdf")
    assert run.returncode == 0, run.stderr[-3000:]
    assert planned_jobs(run) == {}


def test_changing_one_ratio_rebuilds_only_that_target(study):
    config = micro_config()
    config["pruning"]["methods"]["filter"]["ratios"] = [20, 40]
    (study / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        run = snakemake(study, "-n")
        assert run.returncode == 0, run.stderr[-3000:]
        # r40 and its fine-tuned twin are new; r50 is no longer the final filter model, so the
        # ONNX export moves to the new final model r40 (filter's highest ratio). The new models
        # join the one interleaved timing, which times every model again: speeds compare only
        # within one session.
        assert planned_jobs(run) == {
            "prune": 1,
            "finetune": 1,
            "evaluate": 2,
            "time_models": 1,
            "export_onnx": 1,
            "aggregate": 1,
            "report": 1,
            "all": 1,
        }
        text = run.stdout + run.stderr
        assert "results/prune/filter/r40/model.pth" in text
        assert "results/eval/finetune/filter/r40/metrics.json" in text
    finally:
        (study / "config.yaml").write_text(yaml.safe_dump(micro_config()))


def dry_run_with(study: Path, tmp_path: Path, change: dict) -> dict[str, int]:
    """The jobs a dry run plans after ``change`` (a config override file, as a user passes)."""
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump(change))
    run = snakemake(study, "-n", "results/report.pdf", "--configfile", str(override))
    assert run.returncode == 0, run.stderr[-3000:]
    return planned_jobs(run)


RUN_ONLY = {"log_interval": 3, "checkpoint_interval": 3, "threads": 1}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"train": RUN_ONLY}, {}),
        ({"evaluate": {"onnx": {"frames": 2}}}, {"export_onnx": 5}),
        # The iterative loop's GMACs use it too; the exports do not (only the iterative
        # model's, whose input changes).
        (
            {"evaluate": {"flops_images": 2}},
            {
                "iterative": 1,
                "evaluate": 16,
                "export_onnx": 1,
                "iterative_control": 1,
                "time_models": 1,
            },
        ),
        # Every fine-tuned model and its control; not the iterative loop, whose steps have
        # finetune_iters of their own, nor its control.
        (
            {"pruning": {"finetune": {"iters": 3}}},
            {
                "finetune": 6,
                "finetune_baseline": 1,
                "evaluate": 7,
                "export_onnx": 4,
                "time_models": 1,
            },
        ),
        # A method's option reaches its prune job's params, so its targets rerun (the iterative
        # loop is off: it refuses part_ratios on its method, filter_ffn).
        (
            {
                "pruning": {
                    "iterative": {"enabled": False},
                    "methods": {"filter_ffn": {"part_ratios": {"ffn": 25}}},
                }
            },
            {"prune": 1, "finetune": 1, "evaluate": 2, "export_onnx": 1, "time_models": 1},
        ),
        # Every model is timed again, in one job; no evaluation reruns. The ONNX exports time
        # onnxruntime against PyTorch with the same runs.
        ({"evaluate": {"latency": {"runs": 12}}}, {"time_models": 1, "export_onnx": 5}),
        # A CPU schedule of its own: the CPU timings (all models, the ONNX exports) again, no
        # evaluation (a 2:4 model's kernels are timed on the GPU, with the shared schedule).
        (
            {"evaluate": {"latency": {"cpu": {"warmup": 1, "runs": 6, "rounds": 3}}}},
            {"time_models": 1, "export_onnx": 5},
        ),
    ],
    ids=[
        "train-run-only-values",
        "onnx-frames",
        "flops-images",
        "finetune-iters",
        "method-option",
        "latency-runs",
        "latency-cpu-schedule",
    ],
)
def test_a_value_reruns_only_the_rules_that_use_it(study, tmp_path, change, expected):
    downstream = {"aggregate": 1, "report": 1} if expected else {}
    assert dry_run_with(study, tmp_path, change) == {**expected, **downstream}


def test_a_value_a_rule_uses_still_reruns_it(study, tmp_path):
    planned = dry_run_with(study, tmp_path, {"train": {"lr": 1.0e-4}})
    assert planned["train_baseline"] == 1 and planned["evaluate"] == 16
    # The worker count changes the loader workers' seeds, hence the augmentation.
    assert dry_run_with(study, tmp_path, {"train": {"num_workers": 1}})["train_baseline"] == 1


@pytest.mark.parametrize(
    "change",
    [{"pruning": {"finetune": {"iters": 3}}}, {"evaluate": {"latency": {"runs": 12}}}],
    ids=["finetune-iters", "latency-runs"],
)
def test_the_iterative_loop_reruns_only_for_what_it_uses(study, tmp_path, change):
    """The loop takes lr and warm-up from pruning.finetune, and the baseline's accuracy; a
    change of the fine-tune's iters or of the latency timing reruns neither it nor its control
    (the full study's loop is 3 x 2,000 GPU iterations, its control as many)."""
    planned = dry_run_with(study, tmp_path, change)
    assert planned and not {"iterative", "iterative_control"} & set(planned), planned
    planned = dry_run_with(study, tmp_path, {"pruning": {"iterative": {"steps": 3}}})
    assert planned["iterative"] == 1 and planned["iterative_control"] == 1


REPLICATES = {"pruning": {"finetune": {"replicate_seeds": [7]}}}
FINETUNED = [
    "finetune/baseline",
    *(f"finetune/{m}/r{r}" for m, r in [("filter", 20), ("filter", 50), ("filter_ffn", 50)]),
    *(f"finetune/{m}/r{r}" for m, r in [("weight", 30), ("weight", 70), ("weight_global", 50)]),
]


def test_replicate_seeds_add_their_own_targets_and_redo_nothing(study, tmp_path):
    """Each seed fine-tunes every fine-tuned model and the control again; no existing model is
    redone (the recipe the fine-tuning rules see leaves the seed list out)."""
    assert dry_run_with(study, tmp_path, REPLICATES) == {
        "finetune_replicate": 6,
        "finetune_baseline_replicate": 1,
        "evaluate_replicate": 7,
        "aggregate": 1,
        "report": 1,
    }


def _copy_finished_study(study: Path, copy: Path) -> None:
    """The finished study with its Snakemake records, less the Runner's resume checkpoints in
    ``work/`` (not a workflow output: nothing in a finished study reads them)."""
    import shutil

    shutil.copytree(
        study,
        copy,
        symlinks=True,
        ignore=lambda folder, names: ["work"] if Path(folder) == study else [],
    )


def test_the_cpu_schedule_times_every_model_on_the_cpu(study, tmp_path):
    """evaluate.latency.cpu replaces warm-up, runs and rounds of the CPU timing (the full
    study's R50 takes seconds per frame there); the GPU would keep the shared ones."""
    import json

    workdir = tmp_path / "study"
    _copy_finished_study(study, workdir)
    override = tmp_path / "cpu.yaml"
    override.write_text(
        yaml.safe_dump({"evaluate": {"latency": {"cpu": {"warmup": 1, "runs": 6, "rounds": 3}}}})
    )
    run = snakemake(workdir, "results/eval/latency.json", "--configfile", str(override))
    assert run.returncode == 0, run.stderr[-3000:]
    latency = json.loads((workdir / "results/eval/latency.json").read_text())
    assert (latency["rounds"], latency["runs_per_round"], latency["warmup"]) == (3, 2, 1)
    # Every model timed in those 3 rounds (of 2 runs each).
    assert {len(entry["round_medians_ms"]) for entry in latency["models"].values()} == {3}
    assert latency["provenance"]["settings"]["latency"]["cpu"] == {
        "warmup": 1,
        "runs": 6,
        "rounds": 3,
    }


def test_replicate_seeds_reach_the_summary_and_report(study, tmp_path):
    import json

    from pypdf import PdfReader

    from detrprune.train.checkpoint import read_checkpoint

    copy = tmp_path / "study"
    _copy_finished_study(study, copy)
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump(REPLICATES))
    run = snakemake(copy, "results/report.pdf", "--configfile", str(override))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]

    summary = pd.read_csv(copy / "results" / "summary.csv").set_index("variant")
    assert sorted(summary.index[summary["seeds"].notna()]) == sorted(FINETUNED)
    assert (summary.loc[FINETUNED, "seeds"] == 2).all()
    for variant in FINETUNED:
        replicate = f"replicate/s7/{variant}"
        record = json.loads((copy / f"results/eval/{replicate}/metrics.json").read_text())
        assert record["variant"] == replicate and record["finetune"]["iters"] == 2
        for log in (f"logs/{replicate}.log", f"logs/evaluate/{replicate}.log"):
            assert (copy / log).stat().st_size > 0, log
    # The seed is applied: seed 7 fine-tunes to other weights than the study's seed.
    own, _, _ = read_checkpoint(copy / "results/finetune/filter/r50/model.pth")
    other, _, _ = read_checkpoint(copy / "results/replicate/s7/finetune/filter/r50/model.pth")
    assert own.keys() == other.keys()
    assert any(not own[key].equal(other[key]) for key in own)
    # The mean difference is the within-seed differences' mean, recomputed from the records.
    row = summary.loc["finetune/filter/r50"]
    replicate_maps = {
        variant: json.loads(
            (copy / f"results/eval/replicate/s7/{variant}/metrics.json").read_text()
        )["mAP"]
        for variant in ("finetune/filter/r50", "finetune/baseline")
    }
    own_delta = row["mAP"] - summary.loc["finetune/baseline", "mAP"]
    seed_delta = replicate_maps["finetune/filter/r50"] - replicate_maps["finetune/baseline"]
    assert row["delta_mAP_seed_mean"] == pytest.approx((own_delta + seed_delta) / 2, abs=1e-6)
    text = "\n".join(p.extract_text() for p in PdfReader(copy / "results/report.pdf").pages)
    assert "Training-seed replicates" in text and "over 2 training seeds" in text


def test_snakemakes_html_report_shows_every_plot_and_table(study):
    from detrprune.report import report_plots

    run = snakemake(study, "--report", "results/report.html")
    assert run.returncode == 0, run.stderr[-3000:]
    html = (study / "results" / "report.html").read_text()
    plots = [f"{stem}.png" for stem in report_plots(iterative=True)]
    for name in (*plots, "summary.csv", "steps.csv", "report.pdf"):
        assert name in html, name
    for category in ("1 Accuracy", "2 Cost", "3 Iterative loop", "4 Tables", "5 Report"):
        assert category in html, category


def test_metrics_record_parts_sparsity_and_provenance(study):
    import json

    baseline = json.loads((study / "results/eval/baseline/metrics.json").read_text())
    weight = json.loads((study / "results/eval/prune/weight/r70/metrics.json").read_text())
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
    assert provenance["settings"]["evaluate"]["bootstrap"]["resamples"] == 1000
    assert provenance["threads"] == 2
    assert provenance["device"] == weight["inference_device"] == "cpu"
    latency = json.loads((study / "results/eval/latency.json").read_text())
    assert latency["provenance"]["settings"]["latency"]["runs"] == 10
    assert latency["provenance"]["device"] == latency["latency_device"]


def test_keep_going_a_failing_target_does_not_stop_the_others(study, tmp_path):
    """A truncated checkpoint (as a full disk or a dead network file system leaves) fails its
    jobs; with --keep-going every other stale job still runs, and the error names the job's log."""
    copy = tmp_path / "study"
    _copy_finished_study(study, copy)
    broken = copy / "results/prune/weight/r30/model.pth"
    broken.write_bytes(broken.read_bytes()[:1000])
    stale = [
        "results/eval/prune/filter/r20/metrics.json",
        "results/eval/prune/weight/r70/metrics.json",
    ]
    for path in stale:
        (copy / path).unlink()
    run = snakemake(copy, "--keep-going", "results/report.pdf")
    text = run.stdout + run.stderr
    assert run.returncode != 0
    for path in stale:
        assert (copy / path).exists(), f"{path} was not rebuilt next to the failing job"
    # Both jobs that read the broken file fail, each named with its wildcards and log.
    for rule, log in (
        ("evaluate", "logs/evaluate/prune/weight/r30.log"),
        ("finetune", "logs/finetune/weight/r30.log"),
    ):
        error = text.split(f"Error in rule {rule}:", 1)
        assert len(error) == 2, text[-3000:]
        assert log in error[1].split("Error in rule", 1)[0], error[1][:2000]
        assert "weight/r30" in error[1].split("Error in rule", 1)[0]
    assert "model.pth" in (copy / "logs/evaluate/prune/weight/r30.log").read_text()
    # Nothing downstream of the failures was written.
    assert (copy / "results/summary.csv").stat().st_mtime < (copy / stale[0]).stat().st_mtime

    # The rebuilt evaluations equal the originals byte for byte (an evaluation times
    # nothing, so its record is reproducible): Snakemake's checksums see no change, so the
    # summary and report, made before the checkpoint broke, stay up to date, and a plain rerun
    # has nothing to do even once the broken checkpoint is removed (Snakemake regenerates a
    # missing intermediate file only for an output that needs it).
    for path in stale:
        assert (copy / path).read_bytes() == (study / path).read_bytes(), path
    broken.unlink()
    assert planned_jobs(snakemake(copy, "-n", "results/report.pdf")) == {}
    # The failed targets, named, plan exactly the failed jobs.
    dry = snakemake(
        copy,
        "-n",
        "results/eval/prune/weight/r30/metrics.json",
        "results/finetune/weight/r30/model.pth",
    )
    assert planned_jobs(dry) == {"prune": 1, "finetune": 1, "evaluate": 1}


TIMING_COLUMNS = (
    "latency_ms_median",
    "latency_ms_ci95_low",
    "latency_ms_ci95_high",
    "latency_ms_p90",
    "onnx_latency_ms_median",
    "torch_forward_latency_ms_median",
    *[f"latency_ms_{part}" for part in LATENCY_PARTS],
    "latency_ms_parts_sum",
    "speedup",
    "speedup_ci95_low",
    "speedup_ci95_high",
)


# Hidden temporaries a killed job could strand beside an output (detrprune.jobs.atomic_output)
# or beside the extracted KITTI folder (detrprune.data.archive).
DEBRIS = re.compile(r"\..+\.\d+\.tmp|\..+\.(extract|old)-.+")


def _kill_phases(rng: random.Random) -> list[tuple[str, str]]:
    """(log, output) of each job the fault injection kills, in DAG order: a run to that output
    has that job pending (a run to the report could finish it before it is targeted)."""
    variant = rng.choice(
        [
            f"{method}/r{ratio}"
            for method, spec in micro_config()["pruning"]["methods"].items()
            for ratio in spec["ratios"]
        ]
    )
    return [
        ("train_baseline.log", "results/baseline/model.pth"),
        (f"finetune/{variant}.log", f"results/finetune/{variant}/model.pth"),
        (f"evaluate/finetune/{variant}.log", f"results/eval/finetune/{variant}/metrics.json"),
        ("iterative.log", "results/iterative/steps.csv"),
        ("report.log", "results/report.pdf"),
    ]


def _kill_inside(workdir: Path, reference: Path, log: str, output: str, rng: random.Random) -> None:
    """Run Snakemake to ``output`` and SIGKILL its whole process group (as when a node dies)
    inside the job that writes it, once that job's log has a seeded random share of the lines
    the uninterrupted run's log of the same job has."""
    lines = len((reference / "logs" / log).read_text().splitlines())
    threshold = rng.randint(1, max(1, int(0.7 * lines)))
    log_path, output_path = workdir / "logs" / log, workdir / output
    subprocess.run(
        snakemake_command(workdir, "--unlock"), capture_output=True, timeout=120, check=True
    )
    started = time.time()
    process = subprocess.Popen(
        snakemake_command(workdir, output, "--cores", "2", "--rerun-incomplete"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 1200
    while process.poll() is None and time.monotonic() < deadline:
        # A log left by an earlier killed run is older than this run: only this run's counts.
        if log_path.exists() and log_path.stat().st_mtime >= started:
            if len(log_path.read_text().splitlines()) >= threshold:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=60)
                assert not output_path.exists(), f"{output} was written before the kill"
                return
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"{log}: the job ended or timed out before the kill")


def _weights(workdir: Path) -> dict[str, dict]:
    from detrprune.train.checkpoint import read_checkpoint

    return {
        str(path.relative_to(workdir)): read_checkpoint(path)[0]
        for path in sorted((workdir / "results").rglob("model.pth"))
    }


def test_a_run_killed_at_random_moments_equals_an_uninterrupted_one(study, tmp_path_factory):
    """Fault injection: SIGKILL the whole study at seeded random moments inside training, the
    iterative loop, a fine-tune, an evaluation and the report, rerun each time; the result is
    what the uninterrupted ``study`` got (weights bit for bit, every summary column but the
    timings, the training curve, the iterative steps, the report), with no debris left. Run
    from nothing, this is also the reproducibility check: the same config gives the same
    numbers."""
    from detrprune.report.pdf import write_report
    from detrprune.report.plots import make_plots

    again = tmp_path_factory.mktemp("killed")
    (again / "config.yaml").write_text(yaml.safe_dump(micro_config()))
    rng = random.Random(35)
    for log, output in _kill_phases(rng):
        _kill_inside(again, study, log, output, rng)
    subprocess.run(
        snakemake_command(again, "--unlock"), capture_output=True, timeout=120, check=True
    )
    run = snakemake(again, "results/report.pdf", "--rerun-incomplete")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert planned_jobs(snakemake(again, "-n", "results/report.pdf")) == {}

    debris = [str(p) for p in again.rglob("*") if DEBRIS.fullmatch(p.name)]
    assert not debris, debris
    first_weights, second_weights = _weights(study), _weights(again)
    assert sorted(first_weights) == sorted(second_weights)
    for name, state in first_weights.items():
        assert state.keys() == second_weights[name].keys(), name
        for key, tensor in state.items():
            assert torch.equal(tensor, second_weights[name][key]), f"{name}: {key}"

    def without_timings(workdir: Path) -> pd.DataFrame:
        summary = pd.read_csv(workdir / "results" / "summary.csv")
        for column in TIMING_COLUMNS:
            summary[column] = 1.0
        return summary

    first, second = without_timings(study), without_timings(again)
    assert first.to_csv(index=False) == second.to_csv(index=False)
    curves = [(w / "results" / "baseline" / "validations.csv").read_bytes() for w in (study, again)]
    assert curves[0] == curves[1]
    steps = [pd.read_csv(w / "results" / "iterative" / "steps.csv") for w in (study, again)]
    assert steps[0].to_csv(index=False) == steps[1].to_csv(index=False)
    pdfs = []
    for name, summary, table in (("first", first, steps[0]), ("second", second, steps[1])):
        out = tmp_path_factory.mktemp(name)
        plots = make_plots(summary, out / "plots", table)
        write_report(summary, plots, {"seed": 2024}, out / "report.pdf", table)
        pdfs.append((out / "report.pdf").read_bytes())
    assert pdfs[0] == pdfs[1]
