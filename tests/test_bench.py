"""bench/pruning_goals.py: goal verdicts on synthetic summaries, its error path, and a real
interleaved re-timing of tiny saved detectors."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "pruning_goals.py"
SAMPLE = REPO / "tests" / "data" / "kitti_sample"

COLUMNS = [
    "variant",
    "method",
    "kind",
    "scope",
    "ratio",
    "finetuned",
    "mAP",
    "mAP50",
    "latency_ms_median",
    "latency_ms_p90",
    "gmacs",
    "params_total",
    "params_nonzero",
    "checkpoint_mb",
    "sparse_mb",
    "sparse_bound_mb",
    "compression_ratio",
    "kitti_mAP_moderate",
    "latency_device",
]


def _row(variant: str, method: str, kind: str, scope: str, ratio: int, ft: bool, **values) -> dict:
    """One summary row; numbers not given default to plausible values."""
    row = {
        "variant": variant,
        "method": method,
        "kind": kind,
        "scope": scope,
        "ratio": ratio,
        "finetuned": ft,
        "mAP50": 0.8,
        "latency_ms_p90": 120.0,
        "params_total": 1_000_000,
        "params_nonzero": 900_000,
        "compression_ratio": 1.1,
        "kitti_mAP_moderate": 0.5,
        "latency_device": "cpu (test, 2 threads)",
    }
    row.update(values)
    return row


def study_rows() -> list[dict]:
    """Baseline, two filter scopes at 20/50 %, fine-tuned backbone r50 (but no fine-tuned
    backbone+ffn r50: a missing row), and weight pruning at 50/90 %.

    Chosen so that: a is not measured (the backbone check alone is met), b is not met (r20 has
    latency fall 0.1 < 0.8 x 0.2), c is not met (r20 met, r50 not), d is met.
    """
    return [
        _row("baseline", "baseline", "baseline", "", 0, False, mAP=0.60, latency_ms_median=100.0,
             gmacs=10.0, checkpoint_mb=60.0, sparse_mb=58.0, sparse_bound_mb=55.0),
        _row("prune/filter/r20", "filter", "filter", "backbone", 20, False, mAP=0.50,
             latency_ms_median=90.0, gmacs=8.0, checkpoint_mb=45.0, sparse_mb=43.0,
             sparse_bound_mb=41.0),
        _row("prune/filter/r50", "filter", "filter", "backbone", 50, False, mAP=0.30,
             latency_ms_median=55.0, gmacs=5.0, checkpoint_mb=30.0, sparse_mb=29.0,
             sparse_bound_mb=27.0),
        _row("finetune/filter/r50", "filter", "filter", "backbone", 50, True, mAP=0.57,
             latency_ms_median=56.0, gmacs=5.0, checkpoint_mb=30.0, sparse_mb=29.0,
             sparse_bound_mb=27.0),
        _row("prune/filter_ffn/r20", "filter_ffn", "filter", "backbone+ffn", 20, False, mAP=0.48,
             latency_ms_median=80.0, gmacs=7.0, checkpoint_mb=40.0, sparse_mb=38.0,
             sparse_bound_mb=36.0),
        _row("prune/filter_ffn/r50", "filter_ffn", "filter", "backbone+ffn", 50, False, mAP=0.25,
             latency_ms_median=58.0, gmacs=5.5, checkpoint_mb=28.0, sparse_mb=27.0,
             sparse_bound_mb=25.0),
        _row("prune/weight/r50", "weight", "weight", "layerwise", 50, False, mAP=0.55,
             latency_ms_median=101.0, gmacs=10.0, checkpoint_mb=60.0, sparse_mb=33.0,
             sparse_bound_mb=31.0),
        _row("prune/weight/r90", "weight", "weight", "layerwise", 90, False, mAP=0.20,
             latency_ms_median=99.0, gmacs=10.0, checkpoint_mb=60.0, sparse_mb=8.0,
             sparse_bound_mb=7.5),
    ]  # fmt: skip


def write_summary(path: Path, rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> Path:
    """Write ``rows`` as the workflow's summary CSV (blank cells for absent values)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_bench(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def bench_record(tmp_path: Path, rows: Sequence[dict], *args: str, **kw) -> tuple[dict, str]:
    """Run the script on ``rows``; return its JSON record and its stdout."""
    summary = write_summary(tmp_path / "results" / "summary.csv", rows, **kw)
    out = tmp_path / "bench.json"
    result = run_bench("--summary", str(summary), "--results", str(summary.parent), "--out",
                       str(out), *args)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text()), result.stdout


def _entry(record: dict, variant: str) -> dict:
    return next(e for e in record["variants"] if e["variant"] == variant)


def _check(goal: dict, subject: str) -> dict:
    return next(c for c in goal["checks"] if c["subject"] == subject)


def test_verdicts_and_numbers(tmp_path):
    record, stdout = bench_record(tmp_path, study_rows())
    assert record["baseline"] == "baseline"
    assert record["verdicts"] == {
        "a": "not measured",
        "b": "not met",
        "c": "not met",
        "d": "met",
        "e": "not measured",
    }
    assert "retime" in record and record["retime"] is None

    # achieved GMAC/s = GMACs / latency in seconds; speedup and FLOPs reduction vs baseline.
    base = _entry(record, "baseline")["summary"]
    assert base["gmacs_per_s"] == pytest.approx(10.0 / 0.100)
    r50 = _entry(record, "prune/filter/r50")
    assert r50["summary"]["gmacs_per_s"] == pytest.approx(5.0 / 0.055)
    assert r50["summary"]["speedup"] == pytest.approx(100.0 / 55.0)
    assert r50["summary"]["flops_reduction"] == pytest.approx(0.5)
    assert r50["summary"]["map_retained"] == pytest.approx(0.30 / 0.60)
    w90 = _entry(record, "prune/weight/r90")["sizes"]
    assert w90["dense_over_sparse"] == pytest.approx(60.0 / 8.0)
    assert w90["sparse_over_bound"] == pytest.approx(8.0 / 7.5)

    # a: backbone keeps 95 % (met); backbone+ffn has no fine-tuned r50 row (not measured).
    goal_a = record["goals"]["a"]
    assert _check(goal_a, "backbone")["verdict"] == "met"
    assert _check(goal_a, "backbone")["measured"]["map_retained"] == pytest.approx(0.95)
    assert _check(goal_a, "backbone+ffn")["verdict"] == "not measured"

    # b: r20 falls 10 % in latency for 20 % fewer FLOPs (needs 16 %); r50 falls 45 % for 50 %.
    goal_b = record["goals"]["b"]
    assert _check(goal_b, "prune/filter/r20")["verdict"] == "not met"
    assert _check(goal_b, "prune/filter/r20")["measured"]["latency_reduction"] == pytest.approx(0.1)
    assert _check(goal_b, "prune/filter/r50")["verdict"] == "met"
    assert {c["subject"] for c in goal_b["checks"]} == {
        "prune/filter/r20",
        "prune/filter/r50",
        "finetune/filter/r50",
        "prune/filter_ffn/r20",
        "prune/filter_ffn/r50",
    }

    # c: zero-shot rows only; at r20 backbone+ffn is cheaper (met), at r50 it is not.
    goal_c = record["goals"]["c"]
    assert [(c["subject"], c["verdict"]) for c in goal_c["checks"]] == [
        ("r20", "met"),
        ("r50", "not met"),
    ]
    assert _check(goal_c, "r50")["measured"]["gmacs_backbone+ffn"] == 5.5

    # d: every sparse file within 1.1x its bound, the r90 weight one 7.5x smaller than dense.
    goal_d = record["goals"]["d"]
    assert goal_d["parts"]["bound"]["verdict"] == "met"
    assert [c["subject"] for c in goal_d["parts"]["dense_over_sparse"]["checks"]] == [
        "prune/weight/r90"
    ]

    # e: the most elastic row with >= 40 % fewer GMACs is prune/filter_ffn/r50 (42 % faster for
    # 45 % fewer GMACs: 0.93), and it has no fine-tuned twin whose mAP could be judged.
    goal_e = record["goals"]["e"]
    assert goal_e["best"] == "prune/filter_ffn/r50" and goal_e["latency_source"] == "summary"
    assert _check(goal_e, "elasticity prune/filter_ffn/r50")["verdict"] == "met"
    assert _check(goal_e, "accuracy prune/filter_ffn/r50")["verdict"] == "not measured"
    assert [c["variant"] for c in goal_e["candidates"]] == [
        "prune/filter/r50",
        "finetune/filter/r50",
        "prune/filter_ffn/r50",
    ]
    assert r50["summary"]["elasticity"] == pytest.approx(0.45 / 0.5)
    assert _entry(record, "baseline")["summary"]["elasticity"] is None
    assert _entry(record, "baseline")["by_part"] is None
    assert r50["by_part"]["backbone"]["latency_ms"] is None  # no latency by part in this summary

    assert "goal a: NOT MEASURED" in stdout and "goal d: MET" in stdout
    assert "goal e: NOT MEASURED" in stdout and " elast " in stdout
    assert "GMAC/s" in stdout and "prune/filter_ffn/r50" in stdout


def test_complete_study_flips_verdicts(tmp_path):
    rows = study_rows()
    rows.append(
        _row("finetune/filter_ffn/r50", "filter_ffn", "filter", "backbone+ffn", 50, True,
             mAP=0.55, latency_ms_median=57.0, gmacs=5.5, checkpoint_mb=28.0, sparse_mb=27.0,
             sparse_bound_mb=25.0)
    )  # fmt: skip
    for row in rows:
        if row["variant"] == "prune/weight/r90":
            row.update(sparse_mb=15.0, sparse_bound_mb=10.0)  # 4x smaller, 1.5x its bound
        if row["variant"] == "prune/filter_ffn/r50":
            row.update(gmacs=4.5)
    record, _ = bench_record(tmp_path, rows)
    assert record["verdicts"]["a"] == "met"  # 0.55 / 0.60 = 91.7 %
    assert record["verdicts"]["c"] == "met"
    assert record["verdicts"]["d"] == "not met"
    dense = record["goals"]["d"]["parts"]["dense_over_sparse"]
    assert dense["checks"][0]["measured"]["dense_over_sparse"] == pytest.approx(4.0)
    assert _check(record["goals"]["d"]["parts"]["bound"], "prune/weight/r90")["verdict"] == (
        "not met"
    )


PARTS = ("backbone", "neck", "encoder", "decoder", "head")
CONTROL_COLUMNS = [
    "control",
    "map_kept",
    "delta_mAP",
    "delta_mAP_ci95_low",
    "delta_mAP_ci95_high",
    "significant",
]
PART_COLUMNS = [
    *(f"gmacs_{part}" for part in (*PARTS, "other")),
    *(f"latency_ms_{part}" for part in (*PARTS, "rest")),
    "latency_ms_parts_sum",
]


def _parts(gmacs_backbone: float, ms_backbone: float, ms_encoder: float) -> dict:
    """GMACs and latency by part: only the backbone's GMACs change between models."""
    return {
        "gmacs_backbone": gmacs_backbone,
        "gmacs_neck": 0.5,
        "gmacs_encoder": 2.0,
        "gmacs_decoder": 1.0,
        "gmacs_head": 0.4,
        "gmacs_other": 0.1,
        "latency_ms_backbone": ms_backbone,
        "latency_ms_neck": 5.0,
        "latency_ms_encoder": ms_encoder,
        "latency_ms_decoder": 10.0,
        "latency_ms_head": 3.0,
        "latency_ms_rest": 12.0,
        "latency_ms_parts_sum": ms_backbone + ms_encoder + 30.0,
    }


def elastic_rows(kept: float, low: float, high: float) -> list[dict]:
    """The study plus fine-tuned backbone+ffn r50 compared with its control, and latency by part.

    prune/filter_ffn/r50 stays the most elastic candidate (0.93; its twin: 0.91); the twin keeps
    ``kept`` of the control's mAP with the interval [low, high] of the difference.
    """
    rows = study_rows()
    rows.append(
        _row("finetune/filter_ffn/r50", "filter_ffn", "filter", "backbone+ffn", 50, True,
             mAP=0.55, latency_ms_median=59.0, gmacs=5.5, checkpoint_mb=28.0, sparse_mb=27.0,
             sparse_bound_mb=25.0)
    )  # fmt: skip
    parts = {"baseline": _parts(6.0, 50.0, 20.0), "prune/filter_ffn/r50": _parts(2.0, 30.0, 20.0)}
    for row in rows:
        row.update(parts.get(row["variant"], {}))
        if row["finetuned"]:
            row.update(control="finetune/baseline", map_kept=kept, delta_mAP=0.55 * (1 - 1 / kept),
                       delta_mAP_ci95_low=low, delta_mAP_ci95_high=high,
                       significant=low > 0 or high < 0)  # fmt: skip
    return rows


@pytest.mark.parametrize(
    ("kept", "low", "high", "verdict"),
    [(0.98, -0.03, 0.01, "met"), (0.90, -0.1, -0.04, "not met")],
)
def test_goal_e_and_the_explanation_by_part(tmp_path, kept, low, high, verdict):
    columns = [*COLUMNS, *CONTROL_COLUMNS, *PART_COLUMNS]
    record, stdout = bench_record(tmp_path, elastic_rows(kept, low, high), columns=columns)
    goal = record["goals"]["e"]
    assert record["verdicts"]["e"] == verdict and goal["best"] == "prune/filter_ffn/r50"
    assert _check(goal, "elasticity prune/filter_ffn/r50")["verdict"] == "met"
    accuracy = _check(goal, "accuracy finetune/filter_ffn/r50")
    assert accuracy["verdict"] == verdict
    assert accuracy["measured"]["control"] == "finetune/baseline"
    assert accuracy["measured"]["map_kept"] == pytest.approx(kept)

    # The backbone loses 2/3 of its GMACs and 40 % of its time; the other parts keep theirs.
    backbone = goal["by_part"]["backbone"]
    assert backbone["gmacs_reduction"] == pytest.approx(2 / 3)
    assert backbone["latency_reduction"] == pytest.approx(0.4)
    assert backbone["elasticity"] == pytest.approx(0.6)
    assert goal["by_part"]["rest"]["gmacs_part"] == "other"
    entry = _entry(record, "prune/filter_ffn/r50")
    assert entry["by_part"] == goal["by_part"]
    assert _entry(record, "prune/filter/r50")["by_part"]["backbone"]["latency_ms"] is None
    assert "    by part, baseline -> prune/filter_ffn/r50 (latency: the summary's, per part):" in (
        stdout
    )
    assert "6.000 -> 2.000 (-66.7%), latency 50.00 -> 30.00 ms (-40.0%), elasticity 0.60" in stdout
    assert f"goal e: {verdict.upper()}" in stdout


def test_an_untrained_baseline_measures_no_share_of_its_map(tmp_path):
    rows = study_rows()
    for row in rows:
        row["mAP"] = 0.0
    record, _ = bench_record(tmp_path, rows)
    assert record["verdicts"]["a"] == "not measured"
    assert _check(record["goals"]["a"], "backbone")["verdict"] == "not measured"


def test_missing_columns_and_rows_are_not_measured(tmp_path):
    """No baseline row, no scope or sparse columns, no weight rows: nothing crashes."""
    rows = [r for r in study_rows() if r["kind"] == "filter"]
    rows[0]["latency_ms_median"] = ""  # a blank cell too
    columns = [c for c in COLUMNS if c not in ("scope", "sparse_mb", "sparse_bound_mb")]
    record, stdout = bench_record(tmp_path, rows, columns=columns)
    assert record["baseline"] is None
    assert set(record["verdicts"].values()) == {"not measured"}
    assert record["goals"]["c"]["checks"] == []
    assert "reason" in record["goals"]["c"]
    entry = _entry(record, "prune/filter/r20")
    assert entry["summary"]["latency_ms_median"] is None
    assert entry["summary"]["speedup"] is None and entry["sizes"]["sparse_mb"] is None
    assert "goal b: NOT MEASURED" in stdout and "n/a" in stdout


def test_old_summary_without_kind_column(tmp_path):
    """Before `kind` existed, the method named the kind: baseline/filter/weight."""
    rows = [r for r in study_rows() if r["method"] in ("baseline", "filter", "weight")]
    columns = [c for c in COLUMNS if c != "kind"]
    record, _ = bench_record(tmp_path, rows, columns=columns)
    assert record["baseline"] == "baseline"
    assert _entry(record, "prune/weight/r90")["kind"] == "weight"
    assert record["verdicts"]["b"] == "not met"


@pytest.mark.parametrize("content", [None, "", "a,b\n1,2\n", ",".join(COLUMNS) + "\n"])
def test_unreadable_summary_is_a_one_line_error(tmp_path, content):
    summary = tmp_path / "summary.csv"
    if content is not None:
        summary.write_text(content)
    out = tmp_path / "bench.json"
    result = run_bench("--summary", str(summary), "--out", str(out))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(summary) in lines[0], result.stderr
    assert not out.exists()


def test_retime_interleaves_real_models(tiny_detector, tmp_path):
    """Re-time a tiny real baseline and a filter-pruned twin on real KITTI frames."""
    from detrprune.data.coco import kitti_to_coco
    from detrprune.prune.filters import filter_prune
    from detrprune.train.checkpoint import save_detector

    detector, cfg = tiny_detector
    results = tmp_path / "results"
    save_detector(detector, results / "baseline" / "model.pth", cfg, {"variant": "baseline"})
    filter_prune(detector, 0.5, (96, 256))
    variant = "prune/filter/r50"
    save_detector(detector, results / variant / "model.pth", cfg, {"variant": variant})
    val_json = tmp_path / "coco" / "val.json"
    kitti_to_coco(SAMPLE, tmp_path / "coco" / "train.json", val_json, val_fraction=0.5, seed=0)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"model": {"input_scale": [256, 96]}, "evaluate": {"threads": 1}})
    )
    # The r20 filter row has no model file; the weight rows are not re-timed (kind filter only).
    rows = [r for r in study_rows() if r["variant"] in ("baseline", variant, "prune/filter/r20")]
    rows.append(study_rows()[-1])

    record, stdout = bench_record(
        tmp_path, rows, "--retime", "--config", str(config), "--val-json", str(val_json),
        "--data-root", str(SAMPLE), "--runs", "4", "--rounds", "2", "--warmup", "1",
        "--images", "2",
    )  # fmt: skip
    retime = record["retime"]
    assert retime["threads"] == 1 and retime["input_scale"] == [256, 96]
    assert retime["runs_per_round"] == 2 and retime["images"] == 2
    assert set(retime["models"]) == {"baseline", variant}
    assert "prune/filter/r20" in retime["not_measured"]
    for timing in retime["models"].values():
        assert timing["latency_runs"] == 4 and len(timing["round_medians_ms"]) == 2
        assert 0 < timing["latency_ms_median"] <= timing["latency_ms_p90"]

    base_ms = retime["models"]["baseline"]["latency_ms_median"]
    ms = retime["models"][variant]["latency_ms_median"]
    retimed = _entry(record, variant)["retimed"]
    assert retimed["speedup"] == pytest.approx(base_ms / ms)
    assert 0 < retimed["speedup_ci95_low"] <= retimed["speedup_ci95_high"]
    assert len(retime["models"][variant]["round_times_ms"]) == 2
    assert retimed["gmacs_per_s"] == pytest.approx(5.0 / (ms / 1000))
    assert _entry(record, "prune/weight/r90")["retimed"] is None

    # Goal b on both latencies: the summary's and the re-timed one.
    assert record["verdicts"]["b"] == "not met"
    b_retimed = record["goals"]["b_retimed"]
    check = _check(b_retimed, variant)
    assert check["verdict"] in ("met", "not met")
    assert check["measured"]["latency_reduction"] == pytest.approx(1 - ms / base_ms)
    assert _check(b_retimed, "prune/filter/r20")["verdict"] == "not measured"
    # A failed check decides the goal; otherwise the unmeasured r20 leaves it unmeasured.
    expected = "not met" if check["verdict"] == "not met" else "not measured"
    assert b_retimed["verdict"] == expected
    assert "goal b_retimed:" in stdout and "re-timed in one process" in stdout
    assert not math.isnan(base_ms)


def test_retime_without_model_files_is_not_measured(tmp_path):
    record, stdout = bench_record(tmp_path, study_rows(), "--retime", "--input-scale", "256", "96")
    assert record["retime"]["models"] == {}
    assert "baseline" in record["retime"]["not_measured"]
    assert record["verdicts"]["b_retimed"] == "not measured"
    assert record["verdicts"]["b"] == "not met"  # the summary's latency is still judged
    # With a re-timing, goal e is judged on it alone: nothing re-timed, nothing judged.
    assert record["goals"]["e"]["latency_source"] == "re-timed"
    assert record["verdicts"]["e"] == "not measured"
    assert "goal e: NOT MEASURED" in stdout and "(re-timed latency)" in stdout
