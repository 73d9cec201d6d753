"""bench/round_to.py: filter pruning with round_to 1 and 8 side by side, timed interleaved in
PyTorch and onnxruntime, on a tiny real detector and real KITTI frames.

Timings are not judged here (a shared CPU is too noisy): the test checks what is pruned and
timed, that the rounds pair, and that the printed speedup is that of the medians."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "round_to.py"
SAMPLE = REPO / "tests" / "data" / "kitti_sample"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.fixture
def study(tiny_detector, tmp_path) -> list[str]:
    """A saved baseline, a val split of the real frames and a config: the command's arguments."""
    from detrprune.data.coco import kitti_to_coco
    from detrprune.train.checkpoint import save_detector

    detector, cfg = tiny_detector
    baseline = tmp_path / "baseline.pth"
    save_detector(detector, baseline, cfg, {"variant": "baseline"})
    val_json = tmp_path / "coco" / "val.json"
    kitti_to_coco(SAMPLE, tmp_path / "coco" / "train.json", val_json, val_fraction=0.5, seed=0)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"model": {"input_scale": [256, 96]}, "evaluate": {"threads": 1}})
    )
    return [
        "--baseline", str(baseline), "--config", str(config), "--val-json", str(val_json),
        "--data-root", str(SAMPLE), "--out", str(tmp_path / "round_to.json"),
    ]  # fmt: skip


def test_each_rounding_is_pruned_and_timed_in_both_runtimes_in_paired_rounds(study):
    out = Path(study[-1])
    args = ["--scopes", "backbone+ffn", "--ratios", "30", "--rounds", "2", "--runs", "2"]
    result = run(*study, *args, "--warmup", "1", "--images", "2")
    assert result.returncode == 0, result.stderr
    record = json.loads(out.read_text())
    models = record["models"]
    assert set(models) == {"baseline", "backbone+ffn/r30/round1", "backbone+ffn/r30/round8"}
    # Rounding down to multiples of 8 keeps fewer channels than the exact ratio does here.
    assert models["backbone+ffn/r30/round8"]["params"] < models["backbone+ffn/r30/round1"]["params"]
    assert models["backbone+ffn/r30/round1"]["params"] < models["baseline"]["params"]
    for entry in models.values():
        for runtime in ("pytorch", "onnxruntime"):
            rounds = entry[runtime]["round_times_ms"]
            assert len(rounds) == 2 and all(len(chunk) == 2 for chunk in rounds)
            pooled = [ms for chunk in rounds for ms in chunk]
            assert entry[runtime]["latency_ms_median"] == pytest.approx(statistics.median(pooled))
    (row,) = record["table"]
    for runtime in ("pytorch", "onnxruntime"):
        unaligned = models["backbone+ffn/r30/round1"][runtime]["latency_ms_median"]
        aligned = models["backbone+ffn/r30/round8"][runtime]["latency_ms_median"]
        assert row[f"{runtime}_speedup"] == pytest.approx(unaligned / aligned)
        low, high = row[f"{runtime}_speedup_ci95"]
        assert 0 < low <= high
    assert "round8 vs round1" in result.stdout and "onnxruntime" in result.stdout


def test_a_missing_baseline_is_a_one_line_error_and_writes_nothing(study, tmp_path):
    args = list(study)
    args[1] = str(tmp_path / "nowhere.pth")
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere.pth" in lines[0], result.stderr
    assert not Path(study[-1]).exists()
