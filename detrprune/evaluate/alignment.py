"""Do hardware-aligned channel widths run faster? ``round_to`` side by side, interleaved.

Behind ``bench/round_to.py``. Each (scope, ratio) is pruned zero-shot from the baseline twice,
once per rounding (e.g. ``round_to`` 1, the exact ratio, and 8, widths rounded down to multiples
of 8), and every model, the baseline included, is timed in one process on the same tensor
forward in PyTorch and in onnxruntime (the graph ``export_onnx`` writes). Rounds rotate the
model order and alternate which runtime goes first, so drift between rounds hits every model
alike; each model's speedup over the baseline gets the paired-round interval of
:func:`detrprune.evaluate.latency.speedup_interval`. Zero-shot models suffice: latency depends on
the shapes, not on the weights' values.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RUNTIMES = ("pytorch", "onnxruntime")


def variant_name(scope: str, ratio: int, round_to: int) -> str:
    """e.g. ``backbone/r30/round8``."""
    return f"{scope}/r{ratio}/round{round_to}"


def compare_roundings(
    baseline: Path,
    batches: Sequence[Mapping[str, Any]],
    *,
    scopes: Sequence[str],
    ratios: Sequence[int],
    roundings: Sequence[int],
    threads: int,
    rounds: int,
    runs_per_round: int,
    warmup: int,
) -> dict[str, Any]:
    """Prune, export and time every (scope, ratio, rounding) and the baseline, interleaved.

    ``batches`` are val batches (as :func:`~detrprune.evaluate.metrics.load_val_batches` gives)
    of one shape; the first is the one exported. Returns per model its parameter count and, per
    runtime, the median, each round's runs, and the speedup over the baseline with its 95 %
    interval.
    """
    import onnxruntime  # noqa: F401  (fail early, before minutes of pruning, if it is missing)
    import torch
    from tqdm import tqdm

    from detrprune.evaluate.latency import speedup_interval
    from detrprune.evaluate.onnx_export import (
        INPUT_NAME,
        OnnxForward,
        export_onnx,
        graph_frames,
        onnx_session,
    )
    from detrprune.prune.counting import count_parameters
    from detrprune.prune.filters import filter_prune
    from detrprune.train.checkpoint import load_detector

    if rounds < 1 or runs_per_round < 1 or warmup < 0:
        raise ValueError("rounds and runs per round must be >= 1, warmup >= 0")
    first = batches[0]
    input_hw = tuple(int(v) for v in first["inputs"][0].shape[-2:])
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    models: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="detrprune-round-to-") as folder:
            plans = [("baseline", None)] + [
                (variant_name(s, r, k), (s, r, k))
                for s in scopes
                for r in ratios
                for k in roundings
            ]
            for name, plan in tqdm(plans, desc="prune and export", unit="model"):
                detector = load_detector(baseline)[0].to("cpu").eval()
                if plan is not None:
                    scope, ratio, round_to = plan
                    filter_prune(detector, ratio / 100, input_hw, scope, round_to=round_to)
                path = Path(folder) / f"{len(models)}.onnx"
                export_onnx(detector, first, path)
                session = onnx_session(path, threads)
                frames = graph_frames(detector, session, batches, path)
                models[name] = {
                    "params": count_parameters(detector),
                    "torch": [(OnnxForward(detector, s), x) for x, s in frames],
                    "session": session,
                    "feeds": [{INPUT_NAME: x.numpy()} for x, _ in frames],
                }

            def timed(name: str, runtime: str, count: int, offset: int) -> list[float]:
                model = models[name]
                times_ms = []
                for i in range(offset, offset + count):
                    if runtime == "pytorch":
                        forward, inputs = model["torch"][i % len(model["torch"])]
                        start = time.perf_counter()
                        forward(inputs)
                    else:
                        feed = model["feeds"][i % len(model["feeds"])]
                        start = time.perf_counter()
                        model["session"].run(None, feed)
                    times_ms.append(1000.0 * (time.perf_counter() - start))
                return times_ms

            names = list(models)
            rounds_ms = {n: {r: [] for r in RUNTIMES} for n in names}
            with torch.no_grad():
                for name in names:
                    for runtime in RUNTIMES:
                        timed(name, runtime, warmup, 0)
                with tqdm(total=rounds * len(names), desc="time", unit="model") as progress:
                    for index in range(rounds):
                        shift = index % len(names)
                        for name in names[shift:] + names[:shift]:
                            for runtime in RUNTIMES[::-1] if index % 2 else RUNTIMES:
                                timed(name, runtime, 1, 0)  # caches after the switch
                                chunk = timed(name, runtime, runs_per_round, index)
                                rounds_ms[name][runtime].append(chunk)
                            progress.update(1)
    finally:
        torch.set_num_threads(previous_threads)
    result: dict[str, Any] = {}
    for name in names:
        entry: dict[str, Any] = {"params": models[name]["params"]}
        for runtime in RUNTIMES:
            chunks = rounds_ms[name][runtime]
            base_chunks = rounds_ms["baseline"][runtime]
            median = statistics.median(ms for chunk in chunks for ms in chunk)
            base = statistics.median(ms for chunk in base_chunks for ms in chunk)
            low, high = speedup_interval(base_chunks, chunks)
            entry[runtime] = {
                "latency_ms_median": median,
                "speedup": base / median,
                "speedup_ci95_low": low,
                "speedup_ci95_high": high,
                "round_times_ms": chunks,
            }
        result[name] = entry
    return result


def rounding_table(result: Mapping[str, Any], roundings: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (scope, ratio): per runtime, each rounding's median (ms) and the speedup of
    the last rounding over the first (e.g. 8 over 1) with its paired-round 95 % interval."""
    from detrprune.evaluate.latency import speedup_interval

    low, high = roundings[0], roundings[-1]
    rows = []
    for key in sorted({name.rsplit("/", 1)[0] for name in result if name != "baseline"}):
        row: dict[str, Any] = {"model": key}
        for runtime in RUNTIMES:
            unaligned = result[f"{key}/round{low}"][runtime]
            aligned = result[f"{key}/round{high}"][runtime]
            for k in roundings:
                row[f"{runtime}_round{k}_ms"] = result[f"{key}/round{k}"][runtime][
                    "latency_ms_median"
                ]
            row[f"{runtime}_speedup"] = (
                unaligned["latency_ms_median"] / aligned["latency_ms_median"]
            )
            row[f"{runtime}_speedup_ci95"] = list(
                speedup_interval(unaligned["round_times_ms"], aligned["round_times_ms"])
            )
        rows.append(row)
    return rows
