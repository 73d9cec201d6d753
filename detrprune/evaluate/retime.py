"""Interleaved re-timing of the study's saved models in one process (the ``--retime`` of the
benchmark in ``bench/``).

Each workflow job times its own model, minutes apart from the others, and the latency of a shared
machine drifts over that time by as much as the speedups under test. Here the baseline and the
variants are loaded together and timed round-robin, so drift hits every model alike. torch and
mmdet are imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from detrprune.evaluate.analysis import SummaryError, baseline_row
from detrprune.evaluate.latency import Schedule, p90, time_interleaved


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
    """Time every model in one process, interleaved (:func:`~detrprune.evaluate.latency.
    time_interleaved`, what the ``time_models`` rule does). Returns per model the median and p90
    over all timed runs, the median of each round (drift shows there), every run by round and
    the run count."""
    import torch

    from detrprune.train.checkpoint import load_detector

    schedule = Schedule(rounds, runs_per_round, warmup, switch_warmup)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        loaded = {name: load_detector(path)[0] for name, path in models.items()}
        timings = time_interleaved(loaded, batches, schedule)
    finally:
        torch.set_num_threads(previous_threads)
    return {
        name: {
            "latency_ms_median": statistics.median(timing.runs),
            "latency_ms_p90": p90(timing.runs),
            "latency_runs": len(timing.runs),
            "round_medians_ms": [statistics.median(chunk) for chunk in timing.rounds],
            # Every timed run by round: the rounds pair the models (same drift) for the
            # speedup's interval.
            "round_times_ms": timing.rounds,
        }
        for name, timing in timings.items()
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
    printed to stderr); with none at all nothing is timed (``models`` is empty), and every
    re-timed number is missing.

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
