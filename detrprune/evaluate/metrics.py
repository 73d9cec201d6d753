"""Accuracy and efficiency of one detector variant: COCO AP, latency, FLOPs, parameters, size.

COCO AP comes from mmdet's ``CocoMetric`` (pycocotools) run by mmengine's test loop; FLOPs from
fvcore. fvcore counts one fused multiply-add as one "flop", so its total is reported as GMACs.
FLOPs are counted on CPU, where deformable attention runs mmcv's ``grid_sample`` path that fvcore
can see (on GPU the CUDA kernel is an opaque op counted as zero).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detrprune.constants import GMACS_PARTS, LATENCY_PARTS
from detrprune.evaluate.bootstrap import (
    DEFAULT_RESAMPLES,
    INTERVAL_METHOD,
    accuracy_intervals,
    median_ci,
    resampled_accuracy,
)
from detrprune.evaluate.kitti_ap import kitti_ap
from detrprune.evaluate.paired import write_resamples
from detrprune.evaluate.semi_structured import nm_sparse_linears, time_semi_structured
from detrprune.prune.methods import count_nonzero_parameters, count_parameters, sparsity_by_part
from detrprune.prune.sparse_io import load_sparse, save_sparse, size_bound_bytes
from detrprune.train.model import coco_evaluator_config, register_mmdet, test_dataloader_config

log = logging.getLogger(__name__)

# CocoMetric's result keys -> the study's column names.
_COCO_KEYS = {
    "coco/bbox_mAP": "mAP",
    "coco/bbox_mAP_50": "mAP50",
    "coco/bbox_mAP_75": "mAP75",
}


def coco_accuracy(
    model: nn.Module,
    val_json: Path,
    data_root: Path,
    input_scale: tuple[int, int],
    classes: Sequence[str],
    step_times_ms: list[float] | None = None,
    step_parts_ms: list[dict[str, float]] | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """COCO mAP, mAP50, mAP75 and per-class AP (``AP_<class>``) on the validation split.

    Also returns the detections CocoMetric scored (COCO results format), so that other metrics
    (KITTI-style AP) are computed from the same inference pass. ``step_times_ms`` gets the wall
    time of each of the pass's ``model.test_step`` calls (batch 1, in order): the same call
    :func:`cpu_latency` times, so the pass doubles as latency runs. ``step_parts_ms`` gets each
    call's time split by model part (:func:`_timed_test_steps`).
    """
    from mmengine.runner import Runner

    register_mmdet()
    with (
        tempfile.TemporaryDirectory(prefix="detrprune-eval-") as work_dir,
        _timed_test_steps(model, step_times_ms, step_parts_ms),
    ):
        prefix = str(Path(work_dir) / "predictions")
        runner = Runner(
            model=model,
            work_dir=work_dir,
            test_dataloader=test_dataloader_config(val_json, data_root, input_scale),
            test_evaluator={**coco_evaluator_config(val_json), "outfile_prefix": prefix},
            test_cfg=dict(type="TestLoop"),
            default_scope="mmdet",
            log_level="WARNING",
        )
        raw = runner.test()
        detections = json.loads(Path(f"{prefix}.bbox.json").read_text())
    metrics = {ours: float(raw[theirs]) for theirs, ours in _COCO_KEYS.items()}
    for name in classes:
        metrics[f"AP_{name}"] = float(raw.get(f"coco/{name}_precision", math.nan))
    return metrics, detections


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
    """The (module, latency part) pairs :class:`_PartClock` hooks on a detector."""
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


class _PartClock:
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


@contextlib.contextmanager
def _timed_test_steps(
    model: nn.Module,
    times_ms: list[float] | None,
    parts_ms: list[dict[str, float]] | None = None,
) -> Iterator[None]:
    """Append the wall time of each ``model.test_step`` call to ``times_ms``, and its split by
    model part (``{part: ms}`` over :data:`LATENCY_PARTS`, adding up to the call's time) to
    ``parts_ms``; None: not recorded (both None: nothing is timed or hooked).

    The loader (num_workers 0) decodes the next image between calls, never during one.
    """
    if times_ms is None and parts_ms is None:
        yield
        return
    own = model.__dict__.get("test_step")
    test_step = model.test_step
    clock = _PartClock()

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        clock.start(start)
        outputs = test_step(*args, **kwargs)
        end = time.perf_counter()
        parts = clock.stop(end)
        if times_ms is not None:
            times_ms.append(1000.0 * (end - start))
        if parts_ms is not None:
            parts_ms.append(parts)
        return outputs

    model.test_step = timed
    try:
        with clock.hooked(model) if parts_ms is not None else contextlib.nullcontext():
            yield
    finally:
        if own is None:
            del model.test_step  # the class's method again
        else:
            model.test_step = own


def load_val_batches(
    val_json: Path, data_root: Path, input_scale: tuple[int, int], count: int
) -> list[dict[str, Any]]:
    """The first ``count`` validation images, loaded and resized once, as batch-1 model inputs."""
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    register_mmdet()
    dataset = DATASETS.build(test_dataloader_config(val_json, data_root, input_scale)["dataset"])
    if len(dataset) == 0:
        raise ValueError(f"{val_json}: the validation split has no images")
    return [pseudo_collate([dataset[i]]) for i in range(min(count, len(dataset)))]


def cpu_description(threads: int) -> str:
    """e.g. ``cpu (AMD EPYC 7B13, 2 threads)``: where a latency number came from."""
    model_name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({model_name}, {threads} threads)"


@torch.no_grad()
def time_test_steps(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    runs: int,
    *,
    warmup: int = 0,
    first: int = 0,
) -> list[float]:
    """Wall times (ms) of ``runs`` back-to-back ``model.test_step`` calls on ``batches`` cycled
    from index ``first``, after ``warmup`` untimed calls (cycled from index 0)."""
    for i in range(warmup):
        model.test_step(batches[i % len(batches)])
    times_ms = []
    for i in range(first, first + runs):
        start = time.perf_counter()
        model.test_step(batches[i % len(batches)])
        times_ms.append(1000.0 * (time.perf_counter() - start))
    return times_ms


@torch.no_grad()
def cpu_latency(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    warmup: int,
    runs: int,
    threads: int,
    timed_ms: Sequence[float] = (),
    timed_parts_ms: Sequence[Mapping[str, float]] | None = None,
) -> dict[str, Any]:
    """Median and p90 wall time of ``model.test_step`` (pre- and post-processing included), and
    where the time goes: ``latency_ms_<part>`` for each of :data:`LATENCY_PARTS`.

    Images are cycled through ``batches``; decoding/resizing is done beforehand and not timed.
    ``timed_ms`` are calls already timed on this CPU with ``threads`` threads (the accuracy
    pass of :func:`coco_accuracy`): their first ``warmup`` are dropped, up to ``runs`` of the
    rest are used, and only the runs still missing are timed here. ``timed_parts_ms`` are
    the same calls split by part (one entry per ``timed_ms`` entry); without them, the parts
    of a latency that reuses the pass are unknown (NaN).

    Each part's figure is its median over the same runs that give ``latency_ms_median``, each
    run's parts adding up to that run's time (:class:`_PartClock`, exclusive time: a part
    nested in another counts once, as the inner one). A median of parts is not a part of the
    median: ``latency_ms_parts_sum`` is their sum, and a warning is logged where it is more
    than 10 % away from ``latency_ms_median`` (runs whose split varies a lot).
    """
    if runs < 1:
        raise ValueError(f"evaluate.latency.runs must be >= 1, got {runs}")
    if timed_parts_ms is not None and len(timed_parts_ms) != len(timed_ms):
        raise ValueError(
            f"{len(timed_parts_ms)} per-part timings for {len(timed_ms)} timed calls: "
            "each timed call needs its split by part"
        )
    reused = list(timed_ms[warmup : warmup + runs])
    reused_parts = list(timed_parts_ms[warmup : warmup + runs]) if timed_parts_ms else []
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    model = model.to("cpu").eval()
    new_parts: list[dict[str, float]] = []
    try:
        missing = runs - len(reused)
        new_warmup = warmup if len(timed_ms) < warmup else 0
        # time_test_steps' own clock gives the run's time; the hooks only split it.
        with _timed_test_steps(model, None, new_parts):
            times_ms = reused + time_test_steps(model, batches, missing, warmup=new_warmup)
    finally:
        torch.set_num_threads(previous_threads)
    parts_runs = reused_parts + new_parts[new_warmup:]
    parts = _part_medians(parts_runs if len(parts_runs) == len(times_ms) else [])
    median = statistics.median(times_ms)
    if abs(parts["latency_ms_parts_sum"] - median) > 0.1 * median:
        log.warning(
            "latency by part: the parts' medians add up to %.3f ms, %.0f %% off the median "
            "%.3f ms (the runs' split varies)",
            parts["latency_ms_parts_sum"],
            100 * (parts["latency_ms_parts_sum"] / median - 1),
            median,
        )
    low, high = median_ci(times_ms)
    times_ms.sort()
    p90 = times_ms[min(len(times_ms) - 1, math.ceil(0.9 * len(times_ms)) - 1)]
    return {
        "latency_ms_median": median,
        # How far the median can be trusted on this machine (bootstrap over the timed runs).
        "latency_ms_ci95_low": low,
        "latency_ms_ci95_high": high,
        "latency_ms_p90": p90,
        **parts,
        "latency_runs": runs,
        "latency_runs_from_accuracy_pass": len(reused),
        "latency_device": cpu_description(threads),
    }


def _part_medians(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``latency_ms_<part>``: each part's median over ``runs`` (NaN without runs), and
    ``latency_ms_parts_sum``, the sum of those medians."""
    medians = {
        f"latency_ms_{part}": statistics.median(run[part] for run in runs) if runs else math.nan
        for part in LATENCY_PARTS
    }
    return {**medians, "latency_ms_parts_sum": sum(medians.values())}


@torch.no_grad()
def gpu_latency(
    model: nn.Module, batches: Sequence[Mapping[str, Any]], warmup: int, runs: int
) -> dict[str, Any]:
    """Median and p90 GPU time of ``model.test_step`` at batch 1, timed with CUDA events.

    No split by model part here (unlike :func:`cpu_latency`): host-side hooks would time the
    kernel launches, not the kernels, and a synchronise at every part would change what is
    timed.

    The model is moved to the current CUDA device (where mmcv's deformable attention runs its
    CUDA kernel when mmcv was built with it); inputs are moved by the data preprocessor, inside
    the timed region as in deployment. Events are read after a synchronise per run, so queued
    kernels are counted.
    """
    if not torch.cuda.is_available():
        raise RuntimeError("gpu_latency needs a CUDA device")
    if runs < 1:
        raise ValueError(f"evaluate.latency.runs must be >= 1, got {runs}")
    model = model.to("cuda").eval()
    path = deformable_attention_path(model, batches[0])
    if path != "mmcv_cuda":
        log.warning(
            "GPU latency: deformable attention ran %s, not mmcv's CUDA kernel (mmcv built "
            "without CUDA ops?): the GPU time is not the deployed model's",
            path,
        )
    for i in range(warmup):
        model.test_step(batches[i % len(batches)])
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times_ms = []
    for i in range(runs):
        start.record()
        model.test_step(batches[i % len(batches)])
        end.record()
        torch.cuda.synchronize()
        times_ms.append(start.elapsed_time(end))
    times_ms.sort()
    p90 = times_ms[min(len(times_ms) - 1, math.ceil(0.9 * len(times_ms)) - 1)]
    return {
        "gpu_latency_ms_median": statistics.median(times_ms),
        "gpu_latency_ms_p90": p90,
        "gpu_latency_device": f"cuda ({torch.cuda.get_device_name()})",
        "gpu_deformable_attention": path,
    }


# mmcv's CUDA deformable-attention kernel (ms_deformable_im2col_gpu_kernel<float>, ...).
MMCV_DEFORMABLE_ATTENTION_KERNEL = "ms_deformable_im2col"


@torch.no_grad()
def deformable_attention_path(model: nn.Module, batch: Mapping[str, Any]) -> str:
    """Which deformable attention one ``test_step`` on the model's device runs, from the
    profiler's kernel and operator names: ``mmcv_cuda`` (mmcv's CUDA kernel), ``pytorch``
    (mmcv's ``grid_sample`` fallback: always on CPU, and on a GPU with an mmcv built without
    CUDA ops) or ``unknown`` (neither seen, e.g. no kernel names without CUPTI)."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = next(model.parameters()).is_cuda
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_cuda else [])]
    with profile(activities=activities) as profiler:
        model.test_step(batch)
        if on_cuda:
            torch.cuda.synchronize()
    names = {event.key for event in profiler.key_averages()}
    if any(MMCV_DEFORMABLE_ATTENTION_KERNEL in name for name in names):
        return "mmcv_cuda"
    if any(name.startswith("aten::grid_sampler") for name in names):
        return "pytorch"
    return "unknown"


class _TensorForward(nn.Module):
    """Detector forward on a preprocessed image tensor, the signature fvcore's tracer needs."""

    def __init__(self, detector: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor):
        return self.detector._forward(inputs, self.data_samples)


# The detector's top-level modules by the part (of GMACS_PARTS) they count in; the rest of a
# two-stage model (proposal generation from the encoder memory) is "other".
MODEL_PARTS = {
    "backbone": "backbone",
    "neck": "neck",
    "encoder": "encoder",
    "decoder": "decoder",
    "bbox_head": "head",
}


def _one_op_per_output_element(inputs: list, outputs: list) -> int:
    """fvcore op handle: one operation per element of each tensor output (none for scalars)."""
    from fvcore.nn.jit_handles import get_shape

    shapes = (get_shape(output) for output in outputs)
    return sum(math.prod(shape) for shape in shapes if shape is not None)


def traced_shape(data: Mapping[str, Any]) -> tuple:
    """What fvcore's count of one preprocessed batch depends on: the input tensor's shape and the
    image and padded shapes mmdet's control flow reads (e.g. whether padding masks are built).
    The count comes from a trace, which records ops and shapes, never pixel values."""
    samples = data["data_samples"]
    return (
        tuple(data["inputs"].shape),
        tuple(tuple(s.img_shape) for s in samples),
        tuple(tuple(s.batch_input_shape) for s in samples),
    )


def _by_traced_shape(
    model: nn.Module, batches: Sequence[Mapping[str, Any]]
) -> list[tuple[dict[str, Any], int]]:
    """One preprocessed batch per distinct :func:`traced_shape`, with how many it stands for:
    tracing the detector costs seconds, and same-shaped images give the same count."""
    distinct: dict[tuple, tuple[dict[str, Any], int]] = {}
    for batch in batches:
        data = model.data_preprocessor(batch, False)
        key = traced_shape(data)
        first, copies = distinct.get(key, (data, 0))
        distinct[key] = (first, copies + 1)
    return list(distinct.values())


@torch.no_grad()
def fvcore_gmacs(model: nn.Module, batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean fvcore count over ``batches`` in GMACs: total, per model part and per operator.

    Images of one :func:`traced_shape` are traced once (``flops_traced`` traces in all) and
    weighted by how many they are.

    Also returns the ops fvcore could not count (counted as 0 in ``gmacs``): element-wise ops
    such as the attention's softmax, mul and sum. How small they are is measured, not assumed:
    a second count with one operation per output element for each of them gives
    ``gops_elementwise`` (giga-operations, not MACs) and its share of the total.
    """
    from fvcore.nn import FlopCountAnalysis

    model = model.to("cpu").eval()
    totals: list[float] = []
    parts: dict[str, float] = {f"gmacs_{part}": 0.0 for part in GMACS_PARTS}
    operators: dict[str, float] = {}
    unsupported: dict[str, int] = {}
    elementwise: list[float] = []
    distinct = _by_traced_shape(model, batches)
    for data, copies in distinct:
        share = copies / len(batches)
        analysis = FlopCountAnalysis(_TensorForward(model, data["data_samples"]), data["inputs"])
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        totals += [analysis.total() / 1e9] * copies
        for name, count in analysis.by_module().items():
            if name.count(".") == 1:  # "detector.<child>"
                part = MODEL_PARTS.get(name.split(".")[1], "other")
                parts[f"gmacs_{part}"] += count / 1e9 * share
        for op, count in analysis.by_operator().items():
            operators[op] = operators.get(op, 0.0) + count / 1e9 * share
        missing = analysis.unsupported_ops()
        for op, n in missing.items():
            unsupported[op] = unsupported.get(op, 0) + n * copies
        if missing:
            per_element = FlopCountAnalysis(
                _TensorForward(model, data["data_samples"]), data["inputs"]
            ).set_op_handle(**dict.fromkeys(missing, _one_op_per_output_element))
            per_element.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            per_element.tracer_warnings("none")
            elementwise += [(per_element.total() - analysis.total()) / 1e9] * copies
    gmacs = statistics.fmean(totals)
    gops_elementwise = statistics.fmean(elementwise) if elementwise else 0.0
    if unsupported:
        log.info(
            "fvcore could not count these ops (0 in gmacs): %s; at one op per output element "
            "they are %.4f G operations, %.2f %% of the counted %.3f GMACs",
            unsupported,
            gops_elementwise,
            100 * gops_elementwise / gmacs if gmacs else 0.0,
            gmacs,
        )
    return {
        "gmacs": gmacs,
        "gops_elementwise": gops_elementwise,
        **parts,
        "gmacs_by_operator": dict(sorted(operators.items())),
        "flops_images": len(totals),
        "flops_traced": len(distinct),
        "flops_unsupported_ops": dict(sorted(unsupported.items())),
    }


def size_metrics(
    model: nn.Module, checkpoint: Path, baseline_nonzero_params: int
) -> dict[str, float | int]:
    """Parameter counts, checkpoint sizes and compression ratio vs the baseline.

    ``checkpoint_mb`` is the dense ``torch.save`` file; ``sparse_mb`` the compact sparse format
    (bitmask + non-zero values, compressed; :mod:`detrprune.prune.sparse_io`), checked to
    restore the exact tensors, with ``sparse_bound_mb`` its information bound.

    The compression ratio is the baseline's non-zero parameter count over this variant's
    (the usual definition in the pruning literature): it credits both removed channels and
    zeroed weights, whereas the dense ``checkpoint_mb`` only shrinks for removed channels.
    """
    nonzero = count_nonzero_parameters(model)
    state = model.state_dict()
    with tempfile.TemporaryDirectory(prefix="detrprune-sparse-") as folder:
        sparse_path = Path(folder) / "model.sparse.zip"
        save_sparse(state, sparse_path)
        sparse_bytes = sparse_path.stat().st_size
        restored, _ = load_sparse(sparse_path)
    if restored.keys() != state.keys() or not all(
        torch.equal(restored[k], v) for k, v in state.items()
    ):
        raise RuntimeError(f"{checkpoint}: the sparse format did not restore the exact tensors")
    return {
        "params_total": count_parameters(model),
        "params_nonzero": nonzero,
        "checkpoint_mb": Path(checkpoint).stat().st_size / 2**20,
        "sparse_mb": sparse_bytes / 2**20,
        "sparse_bound_mb": size_bound_bytes(state) / 2**20,
        "compression_ratio": baseline_nonzero_params / max(nonzero, 1),
    }


def accuracy_record(
    model: nn.Module,
    meta: Mapping[str, Any],
    *,
    val_json: Path,
    data_root: Path,
    input_scale: tuple[int, int],
    classes: Sequence[str],
    bootstrap_resamples: int,
    seed: int,
    out_resamples: Path | None,
    step_times_ms: list[float] | None = None,
    step_parts_ms: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The variant's identity (from its checkpoint ``meta``), COCO and KITTI AP, and their
    bootstrap 95 % intervals over the validation images (``bootstrap_resamples`` resamples
    drawn with ``seed``, from the one inference pass), by the method the record names in
    ``accuracy_interval_method`` (:data:`~detrprune.evaluate.bootstrap.INTERVAL_METHOD`, chosen
    by its measured coverage: bench/interval_coverage.md). ``out_resamples`` gets those
    per-resample metrics (:func:`~detrprune.evaluate.paired.write_resamples`), which pair the
    variant with its control when the summary is aggregated. The inference pass's step times go
    to ``step_times_ms`` and ``step_parts_ms`` when given."""
    record: dict[str, Any] = {
        "variant": meta["variant"],
        "method": meta["method"],
        "kind": meta.get("kind", meta["method"]),
        "scope": meta.get("scope", "none"),
        "ratio": int(meta["ratio"]),
        "finetuned": bool(meta.get("finetuned", False)),
    }
    log.info("evaluating %s: COCO AP on %s", record["variant"], val_json)
    accuracy, detections = coco_accuracy(
        model,
        val_json,
        data_root,
        input_scale,
        classes,
        [] if step_times_ms is None else step_times_ms,
        [] if step_parts_ms is None else step_parts_ms,
    )
    record.update(accuracy)
    coco_gt = json.loads(Path(val_json).read_text())
    record.update(kitti_ap(coco_gt, detections))
    log.info(
        "bootstrap: %d resamples of the %d val images", bootstrap_resamples, len(coco_gt["images"])
    )
    # The exact full-set values (mmdet rounds mAP to 3 decimals), the resamples and the
    # leave-one-out values, from one matching pass.
    resampled = resampled_accuracy(coco_gt, detections, resamples=bootstrap_resamples, seed=seed)
    samples = resampled.samples
    record.update(accuracy_intervals(samples, resampled.point, resampled.jackknife))
    record["accuracy_interval_method"] = INTERVAL_METHOD
    record["bootstrap_resamples"] = bootstrap_resamples
    if out_resamples is not None:
        image_ids = [image["id"] for image in coco_gt["images"]]
        write_resamples(out_resamples, record["variant"], samples, seed=seed, image_ids=image_ids)
    return record


def evaluate_accuracy(
    checkpoint: Path,
    *,
    val_json: Path,
    data_root: Path,
    input_scale: tuple[int, int],
    classes: Sequence[str],
    threads: int,
    bootstrap_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    out_resamples: Path | None = None,
) -> dict[str, Any]:
    """Only the accuracy part of :func:`evaluate_checkpoint` (:func:`accuracy_record`), plus
    the fine-tuning settings: for a seed replicate, whose architecture, and so whose latency,
    FLOPs and size, are those of the variant it replicates."""
    from detrprune.train.checkpoint import load_detector

    torch.set_num_threads(threads)
    model, _, meta = load_detector(checkpoint)
    record = accuracy_record(
        model,
        meta,
        val_json=val_json,
        data_root=data_root,
        input_scale=input_scale,
        classes=classes,
        bootstrap_resamples=bootstrap_resamples,
        seed=seed,
        out_resamples=out_resamples,
    )
    record["inference_device"] = next(model.parameters()).device.type
    if "finetune" in meta:
        record["finetune"] = meta["finetune"]
    log.info("metrics: %s", {k: v for k, v in record.items() if not isinstance(v, dict)})
    return record


def evaluate_checkpoint(
    checkpoint: Path,
    baseline_checkpoint: Path,
    *,
    val_json: Path,
    data_root: Path,
    input_scale: tuple[int, int],
    classes: Sequence[str],
    threads: int,
    warmup: int,
    runs: int,
    flops_images: int,
    bootstrap_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    out_resamples: Path | None = None,
) -> dict[str, Any]:
    """All metrics of one variant as the flat record ``metrics.json`` holds: the accuracy and
    its intervals (:func:`accuracy_record`), then CPU (and GPU) latency, GMACs, size and
    sparsity."""
    from detrprune.train.checkpoint import load_detector, read_checkpoint

    torch.set_num_threads(threads)
    model, _, meta = load_detector(checkpoint)
    baseline_state, _, _ = read_checkpoint(baseline_checkpoint)
    # Buffers (BN running statistics) are not parameters and are not counted.
    parameter_names = {name for name, _ in model.named_parameters()}
    baseline_nonzero = sum(
        int(torch.count_nonzero(t)) for k, t in baseline_state.items() if k in parameter_names
    )
    step_times_ms: list[float] = []
    step_parts_ms: list[dict[str, float]] = []
    record = accuracy_record(
        model,
        meta,
        val_json=val_json,
        data_root=data_root,
        input_scale=input_scale,
        classes=classes,
        bootstrap_resamples=bootstrap_resamples,
        seed=seed,
        out_resamples=out_resamples,
        step_times_ms=step_times_ms,
        step_parts_ms=step_parts_ms,
    )
    # The accuracy pass's calls are CPU latency runs only where it ran on the CPU.
    on_cpu = next(model.parameters()).device.type == "cpu"
    batches = load_val_batches(val_json, data_root, input_scale, max(flops_images, 5))
    if runs < 30:
        log.warning("latency over %d < 30 runs: a smoke-run figure, not a study's median", runs)
    record.update(
        cpu_latency(
            model, batches, warmup, runs, threads, step_times_ms * on_cpu, step_parts_ms * on_cpu
        )
    )
    log.info(
        "latency: %d warm-up + %d timed runs, %d threads; %d of the runs from the accuracy pass",
        warmup,
        runs,
        threads,
        record["latency_runs_from_accuracy_pass"],
    )
    log.info("FLOPs (fvcore) over %d images", min(flops_images, len(batches)))
    record.update(fvcore_gmacs(model, batches[:flops_images]))
    record.update(size_metrics(model, checkpoint, baseline_nonzero))
    record.update(sparsity_by_part(model))
    if torch.cuda.is_available():
        log.info("GPU latency: %d warm-up + %d timed runs (CUDA events)", warmup, runs)
        record.update(gpu_latency(model, batches, warmup, runs))
    # A 2:4-pruned variant (and its fine-tuned twin): dense fp16 vs the sparse kernels on the
    # GPU; without one the timing keys are None and gpu_2to4_skipped_reason says why. The
    # Linears are read off the weights; unstructured pruning's chance 2:4 layers are not timed.
    nm_linears = nm_sparse_linears(model) if meta.get("pruning", {}).get("nm") == [2, 4] else []
    if nm_linears:
        record["linears_2to4"] = len(nm_linears)
        names = [name for name, _ in nm_linears]
        record.update(time_semi_structured(model, batches, warmup=warmup, runs=runs, names=names))
    record["pruning"] = meta.get("pruning", {})
    for key in ("finetune", "iterative_step"):
        if key in meta:
            record[key] = meta[key]
    log.info("metrics: %s", {k: v for k, v in record.items() if not isinstance(v, dict)})
    return record
