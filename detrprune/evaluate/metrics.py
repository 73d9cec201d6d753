"""Accuracy and efficiency of one detector variant: COCO AP, latency, FLOPs, parameters, size.

COCO AP comes from mmdet's ``CocoMetric`` (pycocotools) run by mmengine's test loop; FLOPs from
fvcore. fvcore counts one fused multiply-add as one "flop", so its total is reported as GMACs.
FLOPs are counted on CPU, where deformable attention runs mmcv's ``grid_sample`` path that fvcore
can see (on GPU the CUDA kernel is an opaque op counted as zero).
"""

from __future__ import annotations

import json
import logging
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detrprune.constants import GMACS_PARTS
from detrprune.evaluate.bootstrap import DEFAULT_RESAMPLES, resampled_accuracy
from detrprune.evaluate.intervals import INTERVAL_METHOD, accuracy_intervals
from detrprune.evaluate.kitti_ap import kitti_ap
from detrprune.evaluate.paired import write_resamples
from detrprune.evaluate.semi_structured import nm_sparse_linears, time_semi_structured
from detrprune.prune.counting import count_nonzero_parameters, count_parameters
from detrprune.prune.sparse_io import load_sparse, save_sparse, size_bound_bytes
from detrprune.prune.weights import sparsity_by_part
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
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """COCO mAP, mAP50, mAP75 and per-class AP (``AP_<class>``) on the validation split.

    Also returns the detections CocoMetric scored (COCO results format), so that other metrics
    (KITTI-style AP) are computed from the same inference pass.
    """
    from mmengine.runner import Runner

    register_mmdet()
    with tempfile.TemporaryDirectory(prefix="detrprune-eval-") as work_dir:
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
) -> dict[str, Any]:
    """The variant's identity (from its checkpoint ``meta``), COCO and KITTI AP, and their
    bootstrap 95 % intervals over the validation images (``bootstrap_resamples`` resamples
    drawn with ``seed``, from the one inference pass), by the method the record names in
    ``accuracy_interval_method`` (:data:`~detrprune.evaluate.intervals.INTERVAL_METHOD`, chosen
    by its measured coverage: bench/interval_coverage.md). ``out_resamples`` gets those
    per-resample metrics (:func:`~detrprune.evaluate.paired.write_resamples`), which pair the
    variant with its control when the summary is aggregated."""
    record: dict[str, Any] = {
        "variant": meta["variant"],
        "method": meta["method"],
        "kind": meta.get("kind", meta["method"]),
        "scope": meta.get("scope", "none"),
        "ratio": int(meta["ratio"]),
        "finetuned": bool(meta.get("finetuned", False)),
    }
    log.info("evaluating %s: COCO AP on %s", record["variant"], val_json)
    accuracy, detections = coco_accuracy(model, val_json, data_root, input_scale, classes)
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


def reached_fractions(
    model: nn.Module, baseline_state: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """What pruning reached against the baseline, beside the ratio it was asked for:
    ``kept_channel_fraction`` (output channels kept, over the Conv/Linear layers whose width
    changed; 1 for weight pruning) and ``params_fraction`` (parameters over the baseline's)."""
    from detrprune.prune.filters import filter_shapes, kept_width_fraction

    widths = filter_shapes(model)["widths"]
    before = {
        name: int(baseline_state[f"{name}.weight"].shape[0])
        for name in widths
        if f"{name}.weight" in baseline_state
    }
    names = {name for name, _ in model.named_parameters()}
    baseline_params = sum(t.numel() for key, t in baseline_state.items() if key in names)
    return {
        "kept_channel_fraction": kept_width_fraction(before, widths),
        "params_fraction": count_parameters(model) / baseline_params,
    }


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
    flops_images: int,
    latency: Mapping[str, int] | None = None,
    bootstrap_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    out_resamples: Path | None = None,
) -> dict[str, Any]:
    """All metrics of one variant as the flat record ``metrics.json`` holds: the accuracy and
    its intervals (:func:`accuracy_record`), then GMACs, size and sparsity.

    Latency is not timed here but by the ``time_models`` rule, every model in one process
    (:mod:`detrprune.evaluate.latency`). Only a 2:4-pruned model's dense-vs-sparse GPU kernels
    are timed here, with ``latency``'s ``warmup`` and ``runs``."""
    from detrprune.train.checkpoint import load_detector, read_checkpoint

    torch.set_num_threads(threads)
    model, _, meta = load_detector(checkpoint)
    baseline_state, _, _ = read_checkpoint(baseline_checkpoint)
    # Buffers (BN running statistics) are not parameters and are not counted.
    parameter_names = {name for name, _ in model.named_parameters()}
    baseline_nonzero = sum(
        int(torch.count_nonzero(t)) for k, t in baseline_state.items() if k in parameter_names
    )
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
    batches = load_val_batches(val_json, data_root, input_scale, max(flops_images, 1))
    log.info("FLOPs (fvcore) over %d images", min(flops_images, len(batches)))
    record.update(fvcore_gmacs(model, batches[:flops_images]))
    record.update(size_metrics(model, checkpoint, baseline_nonzero))
    record.update(reached_fractions(model, baseline_state))
    record.update(sparsity_by_part(model))
    # A 2:4-pruned variant (and its fine-tuned twin): dense fp16 vs the sparse kernels on the
    # GPU; without one the timing keys are None and gpu_2to4_skipped_reason says why. The
    # Linears are read off the weights; unstructured pruning's chance 2:4 layers are not timed.
    nm_linears = nm_sparse_linears(model) if meta.get("pruning", {}).get("nm") == [2, 4] else []
    if nm_linears:
        if latency is None:
            raise ValueError("a 2:4-pruned model needs evaluate.latency to time its kernels")
        record["linears_2to4"] = len(nm_linears)
        names = [name for name, _ in nm_linears]
        warmup, runs = int(latency["warmup"]), int(latency["runs"])
        record.update(time_semi_structured(model, batches, warmup=warmup, runs=runs, names=names))
    record["pruning"] = meta.get("pruning", {})
    for key in ("finetune", "iterative_step"):
        if key in meta:
            record[key] = meta[key]
    log.info("metrics: %s", {k: v for k, v in record.items() if not isinstance(v, dict)})
    return record
