"""The coverage simulation that chose the accuracy interval method (bench/interval_coverage.py).

The full simulation (5,000 frames, 250 draws, 1,000 resamples, two scene densities) takes about
12 minutes on 2 cores and its record is committed in bench/; here a fast version checks what it
rests on: a population of known metrics, the bootstrap's lean on small draws, how the method is
chosen, and that the methods the code uses are the ones the committed record chose.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detrprune.evaluate.bootstrap import METRICS
from detrprune.evaluate.coverage import (
    DENSE_OBJECTS,
    TARGETS,
    choose_method,
    population_values,
    simulate,
    summarize,
)
from detrprune.evaluate.intervals import (
    DELTA_INTERVAL_METHOD,
    INTERVAL_METHOD,
    INTERVAL_METHODS,
)
from detrprune.evaluate.synthetic import exact_accuracy, make_population

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def population():
    return make_population(600, seed=3, max_objects=DENSE_OBJECTS)


def test_population_metrics_are_exact_and_the_detectors_differ(population):
    values = population_values(population)
    assert values["better"] == exact_accuracy(*population.dataset("better"))
    # The weak detector's mAP lies near 0.1, the better one's near 0.3; the degraded copy is
    # worse than what it degrades, and "delta" is exactly the difference.
    assert 0.05 < values["weak"]["mAP"] < 0.2 < 0.25 < values["better"]["mAP"] < 0.45
    for m in METRICS:
        assert values["degraded"][m] < values["better"][m]
        assert values["delta"][m] == values["degraded"][m] - values["better"][m]
    # A subset is the same frames: its ground truth and detections only.
    gt, dets = population.dataset("weak", [5, 1, 3])
    assert [image["id"] for image in gt["images"]] == [2, 4, 6]
    assert {d["image_id"] for d in dets} <= {2, 4, 6}
    assert {a["image_id"] for a in gt["annotations"]} <= {2, 4, 6}


def test_a_fast_simulation_shows_the_lean_the_chosen_method_corrects(population):
    """On 40-frame draws the mAP of a draw reads above the population's, and the resamples
    above the draw's own value: the percentile interval leans high, the chosen single-model
    method sits lower, and the paired difference does not lean."""
    sim = simulate(population, draws=12, resamples=120, seed=1, sample_size=40)
    summary = summarize(sim, population_values(population))
    assert set(summary) == set(TARGETS)
    for detector in ("weak", "better"):
        entry = summary[detector]["mAP"]
        assert entry["point_bias"] > 0 and entry["bootstrap_shift"] > 0
        chosen = sim.intervals[detector]["mAP"][INTERVAL_METHOD]
        percentile = sim.intervals[detector]["mAP"]["percentile"]
        assert np.mean(chosen[:, 0] < percentile[:, 0]) > 0.75
        assert np.mean(chosen[:, 1] < percentile[:, 1]) > 0.75
        for method in INTERVAL_METHODS:
            result = entry["methods"][method]
            assert 0 <= result["coverage"] <= 1
            assert result["coverage"] + result["above"] + result["below"] == pytest.approx(1)
            assert result["coverage_se"] == pytest.approx(
                math.sqrt(result["coverage"] * (1 - result["coverage"]) / 12)
            )
    delta = summary["delta"]["mAP"]
    assert abs(delta["bootstrap_shift"]) < 0.25 * delta["bootstrap_sd"]
    # Seeded: the same arguments give the same intervals.
    again = simulate(population, draws=2, resamples=120, seed=1, sample_size=40)
    np.testing.assert_array_equal(
        again.intervals["weak"]["mAP"]["bca"], sim.intervals["weak"]["mAP"]["bca"][:2]
    )


def _runs(coverages: dict[str, list[float]], kitti_share: float = 1.0) -> list[dict]:
    """Two fake runs whose cells (weak/better x METRICS) have the given coverage per method."""
    cells = iter(range(12))
    runs = []
    for _ in range(2):
        summary = {}
        for detector in ("weak", "better"):
            summary[detector] = {}
            for m in METRICS:
                k = next(cells)
                summary[detector][m] = {
                    "methods": {method: {"coverage": c[k]} for method, c in coverages.items()}
                }
        valid = {"full_recall_share": kitti_share}
        runs.append({"max_objects": 7, "summary": summary, "valid_moderate_objects": valid})
    return runs


def test_the_method_is_the_first_within_the_band_else_the_nearest():
    ok, off = [0.95] * 12, [0.95] * 11 + [0.90]
    choice = choose_method(_runs({"bca": ok, "basic": ok, "percentile": ok}), ["weak", "better"])
    assert choice["method"] == "bca" and len(choice["cells"]) == 12
    choice = choose_method(_runs({"bca": off, "basic": ok, "percentile": ok}), ["weak", "better"])
    assert choice["method"] == "basic"
    assert choice["worst"]["bca"] == pytest.approx(0.05)
    # None within 95 +- 3: the one whose worst cell is nearest.
    worse = [0.95] * 11 + [0.80]
    choice = choose_method(
        _runs({"bca": off, "basic": worse, "percentile": worse}), ["weak", "better"]
    )
    assert choice["method"] == "bca"
    # KITTI cells of runs whose draws miss KITTI's recall points do not count (the last cell of
    # each run is KITTI's: its bad coverage is ignored).
    choice = choose_method(
        _runs({"bca": off, "basic": ok, "percentile": ok}, kitti_share=0.5), ["weak", "better"]
    )
    assert choice["method"] == "bca" and len(choice["cells"]) == 8


def test_the_code_uses_the_methods_the_committed_record_chose():
    record = json.loads((REPO / "bench" / "interval_coverage.json").read_text())
    settings = record["settings"]
    assert settings["population"] >= 5000 and settings["draws"] >= 200
    assert settings["resamples"] >= 500 and settings["sample_size"] == 100
    assert record["interval_method"] == INTERVAL_METHOD
    assert record["delta_interval_method"] == DELTA_INTERVAL_METHOD
    table = (REPO / "bench" / "interval_coverage.md").read_text()
    assert f"Chosen for single models: **{INTERVAL_METHOD}**" in table
    assert f"commit {record['provenance']['git_commit']}." in table


def test_the_bench_writes_its_record_and_tables(tmp_path):
    out, md = tmp_path / "coverage.json", tmp_path / "coverage.md"
    args = ["--population", "150", "--draws", "3", "--resamples", "30", "--scenes", "7"]
    done = subprocess.run(
        [sys.executable, "bench/interval_coverage.py", *args, "--out", out, "--md", md],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())
    assert record["settings"]["draws"] == 3 and len(record["runs"]) == 1
    assert record["interval_method"] in INTERVAL_METHODS
    assert record["provenance"]["command"].endswith(str(md))
    for method in INTERVAL_METHODS:
        assert method in md.read_text()
    assert "Chosen for paired differences" in done.stdout
