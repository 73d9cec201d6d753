"""Latency of every evaluated model, timed in one process, interleaved (rule ``time_models``).

A latency measured by each evaluation job on its own, minutes apart from the others, carries the
machine's drift over those minutes: on a shared 2-core VM, models of identical shapes read 20 %
apart that way. Here all models are loaded together and timed round-robin: each round times every
model a few runs, the order rotating by one each round, so drift hits every model alike, and the
rounds pair the models for the speedup's interval (whole rounds resampled together).

Each run is one ``model.test_step`` at batch 1 (pre- and post-processing included) on validation
images decoded and resized beforehand. On the CPU each run is also split by model part
(:data:`~detrprune.constants.LATENCY_PARTS`, forward hooks); on a GPU (when CUDA is available)
the same models are timed again in rounds of their own, synchronising around each run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detrprune.constants import LATENCY_PARTS
from detrprune.evaluate.intervals import median_ci

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

# The columns of the parts each CPU run is split into (PartClock).
PART_COLUMNS: tuple[str, ...] = tuple(f"latency_ms_{part}" for part in LATENCY_PARTS)


# The detector's attributes timed as each latency part (of LATENCY_PARTS); "rest" is the time
# inside ``test_step`` none of them runs in.
_LATENCY_MODULES = {
    "backbone": "backbone",
    "neck": "neck",
    "encoder": "encoder",
    "decoder": "decoder",
    "bbox_head": "head",
}
# The head's branches are also called directly, not through ``bbox_head.forward``: by the refine
# decoder (``reg_branches``, from inside ``decoder``) and by the two-stage proposal selection
# (the extra last branch of each, from the detector). fvcore's ``gmacs_head`` counts them as
# head wherever they are called from, so latency does too.
_HEAD_BRANCHES = ("cls_branches", "reg_branches")


def _latency_modules(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, latency part) pairs :class:`PartClock` hooks on a detector."""
    from torch import nn

    modules = []
    for name, part in _LATENCY_MODULES.items():
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            modules.append((module, part))
    head = getattr(model, "bbox_head", None)
    for name in _HEAD_BRANCHES:
        branches = getattr(head, name, None)
        if isinstance(branches, nn.ModuleList):
            modules += [(branch, "head") for branch in branches]
    return modules


class PartClock:
    """Exclusive wall time per model part inside one ``test_step`` call, from forward hooks.

    A stack of the parts being run: a module's pre-hook charges the time since the last mark to
    the part on top of the stack ("rest" when it is empty) and pushes its own part, its post-hook
    charges the time to the top and pops. Nested parts (a head branch called inside the decoder)
    are thus charged to the innermost one, and the parts of a call add up exactly to the time
    from :meth:`start` to :meth:`stop`. Hooks add a few microseconds per hooked call (a few
    dozen per ``test_step``), which is why it is used instead of torch.profiler on every run.
    """

    def __init__(self) -> None:
        self._stack: list[str] = []
        self._spent: dict[str, float] = {}
        self._mark = 0.0
        self._running = False

    def start(self, now: float) -> None:
        """Begin a call at ``now`` (a ``time.perf_counter()`` reading)."""
        # A call that raised left its parts on the stack: each call starts from an empty one.
        self._stack.clear()
        self._spent = dict.fromkeys(LATENCY_PARTS, 0.0)
        self._mark = now
        self._running = True

    def stop(self, now: float) -> dict[str, float]:
        """End the call at ``now``; each part's time in it (ms)."""
        self._charge(now)
        self._running = False
        return {part: 1000.0 * seconds for part, seconds in self._spent.items()}

    def _charge(self, now: float) -> None:
        self._spent[self._stack[-1] if self._stack else "rest"] += now - self._mark
        self._mark = now

    def enter(self, part: str) -> None:
        if self._running:
            self._charge(time.perf_counter())
            self._stack.append(part)

    def leave(self, part: str) -> None:
        if self._running and self._stack:
            self._charge(time.perf_counter())
            self._stack.pop()

    @contextlib.contextmanager
    def hooked(self, model: nn.Module) -> Iterator[None]:
        """Hook the detector's parts for the duration; hooks return None, so outputs are the
        model's own."""
        handles = []
        try:
            for module, part in _latency_modules(model):
                handles.append(
                    module.register_forward_pre_hook(lambda _m, _a, part=part: self.enter(part))
                )
                handles.append(
                    module.register_forward_hook(lambda _m, _a, _o, part=part: self.leave(part))
                )
            yield
        finally:
            for handle in handles:
                handle.remove()


class LatencyError(ValueError):
    """Settings or inputs a latency cannot be measured from."""


@dataclass(frozen=True)
class Schedule:
    """How the models are timed: ``rounds`` rounds of ``runs_per_round`` timed runs per model,
    after ``warmup`` untimed runs per model at the start and ``switch_warmup`` each time a model
    comes up (caches after switching models)."""

    rounds: int
    runs_per_round: int
    warmup: int
    switch_warmup: int = 1

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.runs_per_round < 1:
            raise LatencyError(
                f"latency: rounds and runs per round must be >= 1, got {self.rounds} and "
                f"{self.runs_per_round}"
            )
        if self.warmup < 0 or self.switch_warmup < 0:
            raise LatencyError("latency: warm-up runs must be >= 0")

    @classmethod
    def from_config(cls, latency: Mapping[str, Any]) -> Schedule:
        """From ``evaluate.latency`` (``runs`` spread over ``rounds``, rounded up per round)."""
        rounds = int(latency["rounds"])
        return cls(
            rounds=rounds,
            runs_per_round=max(1, math.ceil(int(latency["runs"]) / max(rounds, 1))),
            warmup=int(latency["warmup"]),
        )


@dataclass
class Timing:
    """One model's timed runs, by round (ms), and on the CPU each run's split by part."""

    rounds: list[list[float]] = field(default_factory=list)
    parts: list[dict[str, float]] = field(default_factory=list)

    @property
    def runs(self) -> list[float]:
        return [ms for chunk in self.rounds for ms in chunk]


def p90(times_ms: Sequence[float]) -> float:
    """The 90th percentile, nearest rank."""
    ordered = sorted(times_ms)
    return ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]


def _timed_call(model: nn.Module, batch: Mapping[str, Any], cuda: bool) -> float:
    """Wall time (ms) of one ``test_step``; on CUDA, queued kernels included."""
    import torch

    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.test_step(batch)
    if cuda:
        torch.cuda.synchronize()
    return 1000.0 * (time.perf_counter() - start)


def time_interleaved(
    models: Mapping[str, nn.Module],
    batches: Sequence[Mapping[str, Any]],
    schedule: Schedule,
    *,
    device: str = "cpu",
) -> dict[str, Timing]:
    """Time every model in ``schedule.rounds`` round-robin rounds on ``device``.

    The models are moved to ``device``. Images are cycled through ``batches``, each model from
    where it left off, so every model sees the same images in the same order. On the CPU each
    timed run is split by model part (exclusive time, adding up to the run).
    """
    import torch
    from tqdm import tqdm

    if not models:
        raise LatencyError("latency: no models to time")
    if not batches:
        raise LatencyError("latency: no images to time on")
    cuda = device.startswith("cuda")
    loaded = {name: model.to(device).eval() for name, model in models.items()}
    names = list(loaded)
    timings = {name: Timing() for name in names}
    done = dict.fromkeys(names, 0)
    with torch.no_grad():
        for name in names:
            for i in range(schedule.warmup):
                loaded[name].test_step(batches[i % len(batches)])
    total = schedule.rounds * len(names)
    with (
        torch.no_grad(),
        tqdm(total=total, desc=f"latency on {device}", unit="model-round") as progress,
    ):
        for round_index in range(schedule.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                model = loaded[name]
                for i in range(schedule.switch_warmup):
                    model.test_step(batches[i % len(batches)])
                chunk = []
                clock = PartClock()
                with contextlib.nullcontext() if cuda else clock.hooked(model):
                    for _ in range(schedule.runs_per_round):
                        batch = batches[done[name] % len(batches)]
                        done[name] += 1
                        if cuda:
                            chunk.append(_timed_call(model, batch, cuda))
                            continue
                        start = time.perf_counter()
                        clock.start(start)
                        model.test_step(batch)
                        end = time.perf_counter()
                        timings[name].parts.append(clock.stop(end))
                        chunk.append(1000.0 * (end - start))
                timings[name].rounds.append(chunk)
                progress.update(1)
    return timings


def speedup_interval(
    baseline_rounds: Sequence[Sequence[float]],
    variant_rounds: Sequence[Sequence[float]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the speedup (baseline median / variant median) from an
    interleaved timing: whole rounds are drawn with replacement, the same ones for both
    models, so drift between rounds stays paired; each draw pools the drawn rounds' runs.
    """
    base = np.asarray(baseline_rounds, dtype=np.float64)
    variant = np.asarray(variant_rounds, dtype=np.float64)
    if base.ndim != 2 or base.shape[0] != variant.shape[0] or base.shape[0] < 1:
        raise ValueError(
            f"speedup interval: rounds of runs must pair up, got shapes {base.shape} and "
            f"{variant.shape}"
        )
    draws = np.random.default_rng(seed).integers(0, base.shape[0], size=(resamples, base.shape[0]))
    pooled_base = np.median(base[draws].reshape(resamples, -1), axis=1)
    pooled_variant = np.median(variant[draws].reshape(resamples, -1), axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(pooled_base / pooled_variant, [tail, 100 - tail])
    return float(low), float(high)


def latency_columns(
    timings: Mapping[str, Timing], baseline: str, *, prefix: str = "", seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Per model: ``{prefix}latency_ms_median`` with its 95 % interval (bootstrap over the
    runs), ``_p90``, and ``{prefix}speedup`` (baseline median / model median) with its paired
    95 % interval over whole rounds; on the CPU (``prefix`` empty) also each part's median over
    the runs and their sum (``latency_ms_parts_sum``; a median of parts is not a part of the
    median).

    Raises:
        LatencyError: ``baseline`` is not among the timed models.
    """
    if baseline not in timings:
        raise LatencyError(f"latency: the baseline {baseline!r} is not among the timed models")
    base = timings[baseline]
    base_median = statistics.median(base.runs)
    out: dict[str, dict[str, Any]] = {}
    for name, timing in timings.items():
        runs = timing.runs
        median = statistics.median(runs)
        low, high = median_ci(runs, seed=seed)
        speed_low, speed_high = speedup_interval(base.rounds, timing.rounds, seed=seed)
        columns: dict[str, Any] = {
            f"{prefix}latency_ms_median": median,
            f"{prefix}latency_ms_ci95_low": low,
            f"{prefix}latency_ms_ci95_high": high,
            f"{prefix}latency_ms_p90": p90(runs),
            f"{prefix}speedup": base_median / median,
            f"{prefix}speedup_ci95_low": speed_low,
            f"{prefix}speedup_ci95_high": speed_high,
        }
        if not prefix and timing.parts:
            medians = {
                f"latency_ms_{part}": statistics.median(run[part] for run in timing.parts)
                for part in LATENCY_PARTS
            }
            columns.update(medians, latency_ms_parts_sum=sum(medians.values()))
        out[name] = columns
    return out


def time_models(
    model_paths: Mapping[str, Path],
    *,
    val_json: Path,
    data_root: Path,
    input_scale: tuple[int, int],
    threads: int,
    schedule: Schedule,
    images: int,
    baseline: str = "baseline",
    seed: int = 0,
    gpu_schedule: Schedule | None = None,
) -> dict[str, Any]:
    """The ``time_models`` job: load every model, time them interleaved on the CPU with
    ``schedule`` (and on the GPU, where CUDA is available, with ``gpu_schedule``, by default the
    same), and return the record ``latency.json`` holds: the settings, the devices, and per model
    its summary columns (:func:`latency_columns`) and round medians.
    """
    import torch
    from tqdm import tqdm

    from detrprune.evaluate.metrics import (
        cpu_description,
        deformable_attention_path,
        load_val_batches,
    )
    from detrprune.train.checkpoint import load_detector

    if baseline not in model_paths:
        raise LatencyError(f"latency: no model file for the baseline {baseline!r}")
    torch.set_num_threads(threads)
    batches = load_val_batches(val_json, data_root, input_scale, images)
    models = {}
    for name, path in tqdm(model_paths.items(), desc="load models", unit="model"):
        models[name] = load_detector(path)[0]
    cpu_device = cpu_description(threads)
    log.info(
        "latency: %d models x %d rounds x %d runs on %s (%d warm-up, %d per switch), %d images",
        len(models),
        schedule.rounds,
        schedule.runs_per_round,
        cpu_device,
        schedule.warmup,
        schedule.switch_warmup,
        len(batches),
    )
    cpu = time_interleaved(models, batches, schedule, device="cpu")
    columns = latency_columns(cpu, baseline, seed=seed)
    record: dict[str, Any] = {
        "baseline": baseline,
        "rounds": schedule.rounds,
        "runs_per_round": schedule.runs_per_round,
        "warmup": schedule.warmup,
        "switch_warmup": schedule.switch_warmup,
        "images": len(batches),
        "threads": threads,
        "input_scale": list(input_scale),
        "latency_device": cpu_device,
    }
    for name, timing in cpu.items():
        columns[name]["latency_device"] = cpu_device
        columns[name]["round_medians_ms"] = [statistics.median(c) for c in timing.rounds]
    if torch.cuda.is_available():
        gpu_device = f"cuda ({torch.cuda.get_device_name()})"
        gpu_schedule = gpu_schedule or schedule
        log.info(
            "GPU latency on %s: %d rounds x %d runs (%d warm-up)",
            gpu_device,
            gpu_schedule.rounds,
            gpu_schedule.runs_per_round,
            gpu_schedule.warmup,
        )
        gpu = time_interleaved(models, batches, gpu_schedule, device="cuda")
        for name, gpu_columns in latency_columns(gpu, baseline, prefix="gpu_", seed=seed).items():
            path = deformable_attention_path(models[name], batches[0])
            if path != "mmcv_cuda":
                log.warning(
                    "GPU latency of %s: deformable attention ran %s, not mmcv's CUDA kernel "
                    "(mmcv built without CUDA ops?): the GPU time is not the deployed model's",
                    name,
                    path,
                )
            columns[name].update(
                gpu_columns, gpu_latency_device=gpu_device, gpu_deformable_attention=path
            )
        record["gpu_latency_device"] = gpu_device
        record["gpu_rounds"] = gpu_schedule.rounds
        record["gpu_runs_per_round"] = gpu_schedule.runs_per_round
        record["gpu_warmup"] = gpu_schedule.warmup
    for name, entry in columns.items():
        log.info(
            "%s: %.2f ms [%.2f, %.2f], speedup %.3fx [%.3f, %.3f]",
            name,
            entry["latency_ms_median"],
            entry["latency_ms_ci95_low"],
            entry["latency_ms_ci95_high"],
            entry["speedup"],
            entry["speedup_ci95_low"],
            entry["speedup_ci95_high"],
        )
    record["models"] = columns
    return record
