"""Interleaved re-timing of the study's saved models in one process (``--retime`` of
``bench/pruning_goals.py``).

Each workflow job times its own model, minutes apart from the others, and the latency of a shared
machine drifts over that time by as much as the speedups under test. Here the baseline and the
variants are loaded together and timed round-robin, so drift hits every model alike. torch and
mmdet are imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import io
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from detrprune.evaluate.goals import SummaryError, baseline_row


@dataclass(frozen=True)
class RetimeSettings:
    """What :func:`retime_summary` times and how (the defaults are the command's)."""

    results: Path = Path("results")  # folder of <variant>/model.pth
    config: Path | None = Path("config.yaml")  # the workflow config: input scale, threads
    input_scale: tuple[int, int] | None = None  # (W, H); None: the config's model.input_scale
    threads: int | None = None  # torch threads; None: the config's evaluate.threads (else 2)
    kinds: tuple[str, ...] = ("filter",)  # kinds re-timed besides the baseline ("all": every row)
    runs: int = 40  # timed runs per model, spread over the rounds
    # Many short rounds pair drift finely: on a 2-core VM, 5 rounds of 6 runs gave elasticities
    # 0.76-0.96 for one model and 20 rounds of 2 gave 0.94-1.05, with narrower intervals.
    rounds: int = 20  # round-robin rounds
    warmup: int = 3  # untimed runs per model at the start
    switch_warmup: int = 1  # untimed runs each time a model comes up
    images: int = 5  # validation images cycled
    val_json: Path = Path("data/coco/val.json")  # COCO json of the val split
    data_root: Path = Path("data/kitti")  # folder holding training/image_2


def p90(times_ms: Sequence[float]) -> float:
    """The p90 as :func:`detrprune.evaluate.metrics.cpu_latency` takes it."""
    ordered = sorted(times_ms)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def retime(
    models: Mapping[str, Path],
    batches: Sequence[Mapping[str, Any]],
    *,
    threads: int,
    rounds: int,
    runs_per_round: int,
    warmup: int,
    switch_warmup: int,
) -> dict[str, dict[str, Any]]:
    """Time every model in one process, interleaved: each round times each model a few runs.

    Each model gets ``warmup`` untimed runs once, then in each of ``rounds`` rounds
    ``switch_warmup`` untimed runs (caches after switching models) and ``runs_per_round`` timed
    runs of ``model.test_step`` (pre- and post-processing included, images cycled, as
    :func:`detrprune.evaluate.metrics.cpu_latency` does). The model order rotates by one each
    round so no model is always timed right after the same one. Returns per model the median and p90
    over all timed runs, the median of each round (drift shows there), every run by round and
    the run count.
    """
    import torch
    from tqdm import tqdm

    from detrprune.evaluate.metrics import time_test_steps
    from detrprune.train.checkpoint import load_detector

    if rounds < 1 or runs_per_round < 1:
        raise ValueError("--rounds and the runs per round must be >= 1")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loaded = {}
        for name, path in tqdm(models.items(), desc="load models", unit="model", leave=False):
            loaded[name] = load_detector(path)[0].to("cpu").eval()
        names = list(loaded)
        times: dict[str, list[float]] = {name: [] for name in names}
        round_times: dict[str, list[list[float]]] = {name: [] for name in names}
        runs_done = dict.fromkeys(names, 0)
        with torch.no_grad():
            for name in names:
                for i in range(warmup):
                    loaded[name].test_step(batches[i % len(batches)])
            progress = tqdm(total=rounds * len(names), desc="retime", unit="chunk")
            with progress:
                for round_index in range(rounds):
                    shift = round_index % len(names)
                    for name in names[shift:] + names[:shift]:
                        progress.set_postfix_str(f"round {round_index + 1}/{rounds} {name}")
                        chunk = time_test_steps(
                            loaded[name],
                            batches,
                            runs_per_round,
                            warmup=switch_warmup,
                            first=runs_done[name],
                        )
                        runs_done[name] += runs_per_round
                        times[name].extend(chunk)
                        round_times[name].append(chunk)
                        progress.update(1)
    finally:
        torch.set_num_threads(previous_threads)
    return {
        name: {
            "latency_ms_median": statistics.median(times[name]),
            "latency_ms_p90": p90(times[name]),
            "latency_runs": len(times[name]),
            "round_medians_ms": [statistics.median(chunk) for chunk in round_times[name]],
            # Every timed run by round: the rounds pair the models (same drift) for the
            # speedup's interval.
            "round_times_ms": round_times[name],
        }
        for name in names
    }


def _config(path: Path | None) -> dict[str, Any]:
    """The workflow config (for input scale and threads), {} when there is none."""
    if path is None or not path.is_file():
        return {}
    import yaml

    with open(path, encoding="utf-8") as handle:
        loaded = yaml.safe_load(handle)
    return loaded if isinstance(loaded, dict) else {}


def retime_summary(summary: pd.DataFrame, settings: RetimeSettings) -> dict[str, Any]:
    """Re-time the baseline and the variants of ``settings.kinds`` whose model files exist.

    Variants without a model file are listed under ``not_measured`` (variant -> reason, also
    printed to stderr); with none at all nothing is timed (``models`` is empty) and the re-timed
    goal is "not measured".

    Raises:
        SummaryError: no input scale (neither given nor in the config), or the validation json
            or data folder missing when there is a model to time.
    """
    from detrprune.evaluate.metrics import cpu_description, load_val_batches

    config = _config(settings.config)
    scale = settings.input_scale or config.get("model", {}).get("input_scale")
    if not scale:
        raise SummaryError(
            f"{settings.config}: no model.input_scale to re-time with (give --input-scale W H)"
        )
    input_scale = (int(scale[0]), int(scale[1]))
    threads = settings.threads or int(config.get("evaluate", {}).get("threads", 2))
    base = baseline_row(summary)
    chosen = summary["kind"].isin(settings.kinds) | ("all" in settings.kinds)
    if base is not None:
        chosen |= summary.index == base.name
    models: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for variant in summary.loc[chosen, "variant"]:
        path = settings.results / variant / "model.pth"
        if path.is_file():
            models[variant] = path
        else:
            skipped[variant] = f"{path}: no model file"
            print(f"retime: {variant} not measured ({skipped[variant]})", file=sys.stderr)
    runs_per_round = max(1, math.ceil(settings.runs / settings.rounds))
    timings: dict[str, dict[str, Any]] = {}
    batches: list[dict[str, Any]] = []
    if models:
        for path in (settings.val_json, settings.data_root):
            if not path.exists():
                raise SummaryError(f"{path}: no such file or folder (needed by --retime)")
        batches = load_val_batches(
            settings.val_json, settings.data_root, input_scale, settings.images
        )
        timings = retime(
            models,
            batches,
            threads=threads,
            rounds=settings.rounds,
            runs_per_round=runs_per_round,
            warmup=settings.warmup,
            switch_warmup=settings.switch_warmup,
        )
    else:
        print("retime: no model files found, nothing re-timed", file=sys.stderr)
    return {
        "latency_device": cpu_description(threads),
        "threads": threads,
        "rounds": settings.rounds,
        "runs_per_round": runs_per_round,
        "warmup": settings.warmup,
        "switch_warmup": settings.switch_warmup,
        "images": len(batches),
        "input_scale": list(input_scale),
        "models": timings,
        "not_measured": skipped,
    }


def latency_modes(
    models: Mapping[str, Path],
    *,
    val_json: Path,
    data_root: Path,
    input_scale: tuple[int, int],
    classes: Sequence[str],
    threads: int,
    rounds: int,
    runs: int,
    warmup: int,
    images: int,
) -> dict[str, dict[str, Any]]:
    """The evaluate rule's CPU latency beside back-to-back runs, per model, in one process.

    ``accuracy_pass`` is what ``evaluate`` records: the ``test_step`` calls of the COCO pass
    (:func:`detrprune.evaluate.metrics.coco_accuracy`), one per validation image in order, the
    loader decoding the next image between two calls; the first ``warmup`` are dropped and the
    next ``runs`` kept. ``back_to_back`` is ``runs`` calls on ``images`` preloaded images after
    ``warmup`` untimed ones (:func:`detrprune.evaluate.metrics.time_test_steps`). Each round
    times every model both ways, the model order rotating and the way timed first alternating,
    so drift hits both alike. Per model: the medians with their 95 % intervals, and the ratio
    accuracy pass / back-to-back with its interval from whole rounds drawn together
    (:func:`detrprune.evaluate.goals.speedup_interval`).

    Raises:
        SummaryError: the validation split has no more than ``warmup`` images.
    """
    import torch
    from tqdm import tqdm

    from detrprune.evaluate.bootstrap import median_ci
    from detrprune.evaluate.goals import speedup_interval
    from detrprune.evaluate.metrics import coco_accuracy, load_val_batches, time_test_steps
    from detrprune.train.checkpoint import load_detector

    if rounds < 1 or runs < 1 or warmup < 0:
        raise ValueError("rounds and runs must be >= 1, warmup >= 0")
    batches = load_val_batches(val_json, data_root, input_scale, images)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    ways = ("accuracy_pass", "back_to_back")
    kept = runs
    try:
        loaded = {name: load_detector(path)[0].to("cpu").eval() for name, path in models.items()}
        names = list(loaded)
        timed = {name: {way: [] for way in ways} for name in names}
        with tqdm(total=rounds * len(names), desc="latency modes", unit="model") as progress:
            for round_index in range(rounds):
                shift = round_index % len(names)
                for name in names[shift:] + names[:shift]:
                    for way in ways[::-1] if round_index % 2 else ways:
                        if way == "accuracy_pass":
                            step_ms: list[float] = []
                            # pycocotools prints its summary table: not this command's output.
                            with contextlib.redirect_stdout(io.StringIO()):
                                coco_accuracy(
                                    loaded[name], val_json, data_root, input_scale, classes, step_ms
                                )
                            if len(step_ms) <= warmup:
                                raise SummaryError(
                                    f"{val_json}: {len(step_ms)} validation images, no more "
                                    f"than the {warmup} warm-up calls: nothing to time"
                                )
                            chunk = step_ms[warmup : warmup + runs]
                        else:
                            chunk = time_test_steps(loaded[name], batches, runs, warmup=warmup)
                        timed[name][way].append(chunk)
                    # Both ways keep as many runs per round: rounds pair in the interval.
                    kept = min(kept, len(timed[name]["accuracy_pass"][-1]))
                    progress.update(1)
    finally:
        torch.set_num_threads(previous_threads)
    result: dict[str, dict[str, Any]] = {}
    for name in names:
        per_way = {way: [chunk[:kept] for chunk in timed[name][way]] for way in ways}
        entry: dict[str, Any] = {}
        for way, chunks in per_way.items():
            pooled = [ms for chunk in chunks for ms in chunk]
            low, high = median_ci(pooled)
            entry[way] = {
                "latency_ms_median": statistics.median(pooled),
                "latency_ms_ci95_low": low,
                "latency_ms_ci95_high": high,
                "round_medians_ms": [statistics.median(chunk) for chunk in chunks],
            }
        low, high = speedup_interval(per_way["accuracy_pass"], per_way["back_to_back"])
        entry["ratio"] = (
            entry["accuracy_pass"]["latency_ms_median"] / entry["back_to_back"]["latency_ms_median"]
        )
        entry["ratio_ci95_low"], entry["ratio_ci95_high"] = low, high
        entry["runs_per_round"] = kept
        result[name] = entry
    return result
