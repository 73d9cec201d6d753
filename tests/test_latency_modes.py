"""bench/latency_modes.py: the evaluate rule's latency (the accuracy pass's calls) beside
back-to-back runs, on tiny real detectors and real KITTI frames.

Timings here are not judged (a shared CPU is too noisy for that): the test checks what is timed,
how the rounds pair and that the ratio is what the medians give."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "bench" / "latency_modes.py"
SAMPLE = REPO / "tests" / "data" / "kitti_sample"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO
    )


@pytest.fixture
def study(tiny_detector, tmp_path) -> dict[str, Path]:
    """A saved baseline and a filter-pruned twin, a val split of the real frames and a config."""
    from detrprune.data.coco import kitti_to_coco
    from detrprune.prune.methods import filter_prune
    from detrprune.train.checkpoint import save_detector

    detector, cfg = tiny_detector
    results = tmp_path / "results"
    save_detector(detector, results / "baseline" / "model.pth", cfg, {"variant": "baseline"})
    pruned = copy.deepcopy(detector)
    filter_prune(pruned, 0.5, (96, 256))
    save_detector(pruned, results / "prune/filter/r50" / "model.pth", cfg, {"variant": "r50"})
    val_json = tmp_path / "coco" / "val.json"
    kitti_to_coco(SAMPLE, tmp_path / "coco" / "train.json", val_json, val_fraction=0.5, seed=0)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"input_scale": [256, 96]},
                "evaluate": {"threads": 1, "latency": {"warmup": 1, "runs": 50}},
            }
        )
    )
    return {"results": results, "val_json": val_json, "config": config, "out": tmp_path / "o.json"}


def common_args(study: dict[str, Path]) -> list[str]:
    return [
        "--results", str(study["results"]), "--config", str(study["config"]),
        "--val-json", str(study["val_json"]), "--data-root", str(SAMPLE),
        "--out", str(study["out"]),
    ]  # fmt: skip


def test_both_ways_are_timed_in_paired_rounds_and_the_ratio_is_of_the_medians(study):
    result = run(*common_args(study), "--rounds", "2", "--images", "2")
    assert result.returncode == 0, result.stderr
    record = json.loads(study["out"].read_text())
    assert record["threads"] == 1 and record["warmup"] == 1 and record["rounds"] == 2
    val_images = len(json.loads(study["val_json"].read_text())["images"])
    assert set(record["models"]) == {"baseline", "prune/filter/r50"}
    for name, entry in record["models"].items():
        # The pass has one call per val image: all but the warm-up one are kept (fewer than
        # the config's 50 runs), and the back-to-back runs are cut to as many, so rounds pair.
        assert entry["runs_per_round"] == val_images - 1
        for way in ("accuracy_pass", "back_to_back"):
            timing = entry[way]
            assert len(timing["round_medians_ms"]) == 2
            assert 0 < timing["latency_ms_ci95_low"] <= timing["latency_ms_median"]
            assert timing["latency_ms_median"] <= timing["latency_ms_ci95_high"]
        ratio = (
            entry["accuracy_pass"]["latency_ms_median"] / entry["back_to_back"]["latency_ms_median"]
        )
        assert entry["ratio"] == pytest.approx(ratio)
        assert 0 < entry["ratio_ci95_low"] <= entry["ratio_ci95_high"]
        assert name in result.stdout
    assert "accuracy pass ms" in result.stdout


def test_a_missing_model_is_a_one_line_error_and_writes_nothing(study):
    result = run(*common_args(study), "--variants", "baseline", "finetune/filter/r50")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "finetune/filter/r50/model.pth" in lines[0], result.stderr
    assert not study["out"].exists()
