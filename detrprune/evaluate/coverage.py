"""How often the bootstrap intervals of :mod:`detrprune.evaluate.intervals` cover the truth.

A simulation (issue #36, "single-model intervals lean high") on the synthetic population of
:mod:`detrprune.evaluate.synthetic`, whose metrics are known exactly. Each draw takes a
validation set of ``sample_size`` images without replacement, bootstraps it as the evaluate rule
does (:func:`~detrprune.evaluate.bootstrap.resampled_accuracy`: full-set value, seeded
resamples, leave-one-out jackknife) and records, for each interval method, whether the 95 %
interval holds the population value. The share of draws that do is the method's coverage; the
summary, the choice of method that :func:`coverage_study` makes from it and its Markdown table
are here too.

Two detector behaviours are simulated, a weak one (mAP near 0.1) and a better one (near 0.3),
and a degraded copy of the better one: the paired difference degraded - better on the same
resamples is checked against the exact population difference the same way.

Everything is seeded: the same arguments give the same record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detrprune.constants import CLASSES
from detrprune.evaluate.bootstrap import METRICS, ResampledAccuracy, resampled_accuracy
from detrprune.evaluate.intervals import (
    AP_BOUNDS,
    DELTA_BOUNDS,
    INTERVAL_METHODS,
    bootstrap_interval,
)
from detrprune.evaluate.kitti_ap import RECALL_POINTS
from detrprune.evaluate.synthetic import (
    DEGRADATION,
    DETECTOR_NAMES,
    DETECTORS,
    MAX_OBJECTS,
    Population,
    exact_accuracy,
    make_population,
    stream_rng,
)

SAMPLE_SIZE = 100
# DENSE_OBJECTS gives SAMPLE_SIZE frames enough objects of every class for KITTI's recall
# points.
DENSE_OBJECTS = 19
# KITTI AP|R40 reaches all its recall points only with at least this many valid (moderate)
# ground truths of a class: with fewer, a TP moves recall by more than 1/40 and the points it
# jumps over count as precision 0, so a small set's AP is biased low by construction. No
# resampling interval can correct that; the choice of method leaves such KITTI cells out when
# more than FULL_RECALL_SHARE of the draws fall short.
FULL_RECALL_OBJECTS = RECALL_POINTS[0]
FULL_RECALL_SHARE = 0.9
# What is checked: each detector alone, and the paired difference degraded - better.
TARGETS: tuple[str, ...] = ("weak", "better", "delta")
DELTA_VARIANT, DELTA_CONTROL = "degraded", "better"
# The band a method's coverage must stay in to be chosen, and the order of preference among
# the methods that do: BCa stays within [0, 1] and follows skew, the basic interval needs
# clipping, the percentile interval corrects no bias.
TARGET_COVERAGE = 0.95
TOLERANCE = 0.03
PREFERENCE: tuple[str, ...] = ("bca", "basic", "percentile")


def population_values(population: Population) -> dict[str, dict[str, float]]:
    """Each detector's exact metrics on all images, and ``"delta"`` (degraded - better)."""
    values = {name: exact_accuracy(*population.dataset(name)) for name in population.detections}
    values["delta"] = {m: values[DELTA_VARIANT][m] - values[DELTA_CONTROL][m] for m in METRICS}
    return values


@dataclass
class Simulation:
    """Per draw and target (TARGETS) and metric: the validation set's point estimate, the mean
    and standard deviation of its bootstrap samples, and each method's interval
    (``intervals[target][metric][method]``, ``(draws, 2)``; the basic one unclipped); and
    per draw the valid moderate ground truths of each class (``(draws, CLASSES)``)."""

    points: dict[str, dict[str, np.ndarray]]
    boot_means: dict[str, dict[str, np.ndarray]]
    boot_sds: dict[str, dict[str, np.ndarray]]
    intervals: dict[str, dict[str, dict[str, np.ndarray]]]
    valid_objects: np.ndarray


def _target_values(target: str, fits: Mapping[str, ResampledAccuracy]) -> ResampledAccuracy:
    """A detector's resampled values, or the paired difference's (jackknife included)."""
    if target != "delta":
        return fits[target]
    variant, control = fits[DELTA_VARIANT], fits[DELTA_CONTROL]
    return ResampledAccuracy(
        point={m: variant.point[m] - control.point[m] for m in METRICS},
        samples={m: variant.samples[m] - control.samples[m] for m in METRICS},
        jackknife={m: variant.jackknife[m] - control.jackknife[m] for m in METRICS},
    )


def draw_seed(seed: int, draw: int) -> int:
    """The bootstrap seed of one draw (the same for every detector: paired resamples)."""
    return int(np.random.SeedSequence([seed, 3, draw]).generate_state(1)[0])


def simulate(
    population: Population,
    *,
    draws: int,
    resamples: int,
    seed: int,
    sample_size: int = SAMPLE_SIZE,
    level: float = 0.95,
) -> Simulation:
    """``draws`` validation sets of ``sample_size`` images drawn without replacement (seeded),
    each bootstrapped ``resamples`` times for every detector with the same indices, and every
    INTERVAL_METHODS interval of each target and metric."""
    if not 1 <= sample_size <= len(population.images):
        raise ValueError(f"sample_size must lie in [1, {len(population.images)}]")
    if draws < 1 or resamples < 1:
        raise ValueError("draws and resamples must be >= 1")
    shape = {t: {m: np.full(draws, math.nan) for m in METRICS} for t in TARGETS}
    sim = Simulation(
        points={t: {m: v.copy() for m, v in ms.items()} for t, ms in shape.items()},
        boot_means={t: {m: v.copy() for m, v in ms.items()} for t, ms in shape.items()},
        boot_sds={t: {m: v.copy() for m, v in ms.items()} for t, ms in shape.items()},
        intervals={
            t: {m: {k: np.full((draws, 2), math.nan) for k in INTERVAL_METHODS} for m in METRICS}
            for t in TARGETS
        },
        valid_objects=np.zeros((draws, len(CLASSES)), dtype=np.int64),
    )
    valid = population.valid_moderate()
    # Streams 0-2 of the seed made the population (make_population), 3 seeds the resamples
    # (draw_seed): the draws take one no other use shares.
    picker = stream_rng(seed, 4)
    needed = [*DETECTOR_NAMES, DELTA_VARIANT]
    for d in range(draws):
        positions = np.sort(picker.choice(len(population.images), sample_size, replace=False))
        sim.valid_objects[d] = valid[positions].sum(axis=0)
        fits = {
            name: resampled_accuracy(
                *population.dataset(name, positions), resamples=resamples, seed=draw_seed(seed, d)
            )
            for name in needed
        }
        for target in TARGETS:
            values = _target_values(target, fits)
            for m in METRICS:
                samples = values.samples[m]
                sim.points[target][m][d] = values.point[m]
                if np.isfinite(samples).any():
                    sim.boot_means[target][m][d] = np.nanmean(samples)
                    sim.boot_sds[target][m][d] = np.nanstd(samples)
                for method in INTERVAL_METHODS:
                    sim.intervals[target][m][method][d] = bootstrap_interval(
                        method, samples, values.point[m], values.jackknife[m], level, bounds=None
                    )
    return sim


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    se = float(np.std(values, ddof=1) / math.sqrt(values.size)) if values.size > 1 else math.nan
    return float(np.mean(values)), se


def summarize(
    sim: Simulation, population: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per target and metric: the population value; the point estimate's mean over draws, its
    bias (with standard error) and spread; the bootstrap's mean shift from the point estimate
    and its mean spread; and per method the coverage with its binomial standard error, the
    shares of draws whose interval lies wholly above / below the population value, the mean
    width and the share of unclipped intervals leaving the quantity's range (AP [0, 1],
    difference [-1, 1]). Intervals are clipped to that range before anything is counted, which
    changes no coverage. A draw without an interval (NaN) counts as not covering."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for target in TARGETS:
        bounds = DELTA_BOUNDS if target == "delta" else AP_BOUNDS
        out[target] = {}
        for m in METRICS:
            truth = float(population[target][m])
            points = sim.points[target][m]
            mean, se = _mean_se(points)
            shift, shift_se = _mean_se(sim.boot_means[target][m] - points)
            entry: dict[str, Any] = {
                "population": truth,
                "point_mean": mean,
                "point_bias": mean - truth,
                "point_bias_se": se,
                "point_sd": float(np.nanstd(points, ddof=1)) if points.size > 1 else math.nan,
                "bootstrap_shift": shift,
                "bootstrap_shift_se": shift_se,
                "bootstrap_sd": float(np.nanmean(sim.boot_sds[target][m])),
                "methods": {},
            }
            for method in INTERVAL_METHODS:
                raw = sim.intervals[target][m][method]
                low, high = np.clip(raw[:, 0], *bounds), np.clip(raw[:, 1], *bounds)
                n = len(raw)
                covered = (low <= truth) & (truth <= high)
                share = float(np.mean(covered))
                entry["methods"][method] = {
                    "coverage": share,
                    "coverage_se": math.sqrt(share * (1.0 - share) / n),
                    "above": float(np.mean(low > truth)),
                    "below": float(np.mean(high < truth)),
                    "mean_width": float(np.nanmean(high - low)),
                    "outside_range": float(
                        np.mean((raw[:, 0] < bounds[0]) | (raw[:, 1] > bounds[1]))
                    ),
                }
            out[target][m] = entry
    return out


def kitti_full_recall_share(valid_objects: np.ndarray) -> float:
    """The share of draws whose every class has FULL_RECALL_OBJECTS valid moderate objects."""
    return float(np.mean((valid_objects >= FULL_RECALL_OBJECTS).all(axis=1)))


def run_coverage(
    *,
    population_size: int,
    draws: int,
    resamples: int,
    seed: int,
    max_objects: int = MAX_OBJECTS,
    sample_size: int = SAMPLE_SIZE,
    level: float = 0.95,
) -> dict[str, Any]:
    """One simulation (population of frames of 0..``max_objects`` objects) as a JSON-ready
    record: the population values, the valid moderate objects per class in a draw (mean, min,
    and the share of draws with enough for every recall point) and :func:`summarize`."""
    population = make_population(population_size, seed, max_objects)
    values = population_values(population)
    sim = simulate(
        population,
        draws=draws,
        resamples=resamples,
        seed=seed,
        sample_size=sample_size,
        level=level,
    )
    return {
        "max_objects": max_objects,
        "population_values": values,
        "valid_moderate_objects": {
            "mean": dict(zip(CLASSES, sim.valid_objects.mean(axis=0).tolist(), strict=True)),
            "min": dict(zip(CLASSES, sim.valid_objects.min(axis=0).tolist(), strict=True)),
            "full_recall_share": kitti_full_recall_share(sim.valid_objects),
        },
        "summary": summarize(sim, values),
    }


def choice_cells(
    runs: Sequence[Mapping[str, Any]], targets: Sequence[str]
) -> list[tuple[int, str, str]]:
    """The ``(run, target, metric)`` cells a method is chosen by: every metric of ``targets``,
    KITTI's only in runs where at least FULL_RECALL_SHARE of the draws reach every recall point
    (below that the small set's KITTI AP is biased by construction, see FULL_RECALL_OBJECTS)."""
    cells = []
    for r, run in enumerate(runs):
        kitti_ok = run["valid_moderate_objects"]["full_recall_share"] >= FULL_RECALL_SHARE
        for target in targets:
            for m in METRICS:
                if m != "kitti_mAP_moderate" or kitti_ok:
                    cells.append((r, target, m))
    return cells


def choose_method(
    runs: Sequence[Mapping[str, Any]],
    targets: Sequence[str],
    *,
    methods: Sequence[str] = PREFERENCE,
    coverage: float = TARGET_COVERAGE,
    tolerance: float = TOLERANCE,
) -> dict[str, Any]:
    """The first of ``methods`` whose coverage lies within ``coverage +- tolerance`` in every
    :func:`choice_cells` cell; if none does, the one whose worst distance from ``coverage`` is
    smallest (ties: the earlier in ``methods``). Returns ``{"method", "worst", "cells"}`` with
    each method's worst distance."""
    cells = choice_cells(runs, targets)

    def worst(method: str) -> float:
        return max(
            abs(runs[r]["summary"][t][m]["methods"][method]["coverage"] - coverage)
            for r, t, m in cells
        )

    distances = {method: worst(method) for method in methods}
    meeting = [method for method in methods if distances[method] <= tolerance + 1e-12]
    chosen = meeting[0] if meeting else min(methods, key=lambda method: distances[method])
    return {
        "method": chosen,
        "worst": distances,
        "cells": [f"{runs[r]['max_objects']}:{t}:{m}" for r, t, m in cells],
    }


def coverage_study(
    *,
    population_size: int,
    draws: int,
    resamples: int,
    seed: int,
    scenes: Sequence[int] = (MAX_OBJECTS, DENSE_OBJECTS),
    sample_size: int = SAMPLE_SIZE,
    level: float = 0.95,
) -> dict[str, Any]:
    """:func:`run_coverage` for each scene density (max objects per frame) in ``scenes``, and
    the methods the coverage supports: ``interval_method`` for single models (the detectors),
    ``delta_interval_method`` for paired differences (percentile or basic, what
    ``paired_delta`` offers)."""
    runs = [
        run_coverage(
            population_size=population_size,
            draws=draws,
            resamples=resamples,
            seed=seed,
            max_objects=max_objects,
            sample_size=sample_size,
            level=level,
        )
        for max_objects in scenes
    ]
    single = choose_method(runs, DETECTOR_NAMES)
    delta = choose_method(runs, ["delta"], methods=("percentile", "basic"))
    return {
        "settings": {
            "population": population_size,
            "sample_size": sample_size,
            "draws": draws,
            "resamples": resamples,
            "seed": seed,
            "level": level,
            "scenes_max_objects": list(scenes),
            "target_coverage": TARGET_COVERAGE,
            "tolerance": TOLERANCE,
            "preference": list(PREFERENCE),
            "full_recall_objects": FULL_RECALL_OBJECTS,
            "full_recall_share": FULL_RECALL_SHARE,
        },
        "detectors": {
            **{name: asdict(DETECTORS[name]) for name in DETECTOR_NAMES},
            DELTA_VARIANT: {"of": DELTA_CONTROL, **asdict(DEGRADATION)},
        },
        "delta": f"{DELTA_VARIANT} - {DELTA_CONTROL}",
        "runs": runs,
        "interval_method": single["method"],
        "delta_interval_method": delta["method"],
        "choice": {"single": single, "delta": delta},
    }


def coverage_table(study: Mapping[str, Any]) -> str:
    """The study's summaries as Markdown: per run a line on its scenes and a table of one row
    per target, metric and method (coverage with its binomial standard error)."""
    draws = study["settings"]["draws"]
    lines = []
    for run in study["runs"]:
        valid = run["valid_moderate_objects"]
        counts = ", ".join(f"{c} {valid['mean'][c]:.0f} (min {valid['min'][c]})" for c in CLASSES)
        lines += [
            f"Frames of 0-{run['max_objects']} objects; valid moderate objects per draw: {counts}; "
            f"draws with >= {FULL_RECALL_OBJECTS} of every class: "
            f"{100 * valid['full_recall_share']:.0f} %.",
            "",
            "| target | metric | population | point bias (se) | boot shift | method | "
            f"coverage (se), {draws} draws | above / below | mean width | outside range |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for target, metrics in run["summary"].items():
            for m, entry in metrics.items():
                for k, (method, r) in enumerate(entry["methods"].items()):
                    head = (
                        f"| {target} | {m} | {entry['population']:+.4f} | "
                        f"{entry['point_bias']:+.4f} ({entry['point_bias_se']:.4f}) | "
                        f"{entry['bootstrap_shift']:+.4f} |"
                        if k == 0
                        else "| | | | | |"
                    )
                    lines.append(
                        f"{head} {method} | {100 * r['coverage']:.1f} % "
                        f"({100 * r['coverage_se']:.1f}) | {100 * r['above']:.1f} / "
                        f"{100 * r['below']:.1f} % | {r['mean_width']:.4f} | "
                        f"{100 * r['outside_range']:.1f} % |"
                    )
        lines.append("")
    for key, name in (("single", "single models"), ("delta", "paired differences")):
        choice = study["choice"][key]
        worst = ", ".join(f"{m} {100 * d:.1f}" for m, d in choice["worst"].items())
        lines.append(
            f"Chosen for {name}: **{choice['method']}** (worst distance from "
            f"{100 * TARGET_COVERAGE:.0f} % in points: {worst}; over {len(choice['cells'])} cells)."
        )
    return "\n".join(lines)
