"""ONNX export of a (possibly pruned) detector, its parity with PyTorch and its onnxruntime latency.

What is exported is the tensor-only part of the detector: the preprocessed image ``(1, 3, H, W)``
(after ``model.data_preprocessor``) in, the last decoder layer's raw head outputs out: class
logits ``(1, num_queries, num_classes)`` (before the sigmoid) and boxes ``(1, num_queries, 4)`` as
normalised ``(cx, cy, w, h)`` relative to the image's ``img_shape``. Post-processing (top-k,
rescaling to the original image) stays outside the graph.

The exporter is torch's TorchScript-based one (``dynamo=False``, deprecated since torch 2.9 but
still shipped). The default ``torch.export``-based exporter cannot trace mmdet/mmcv: they carry
the feature-level shapes as a tensor (``torch._shape_as_tensor``) and turn it back into Python
ints (split sizes, ``linspace`` counts), which torch.export rejects as data-dependent. The
TorchScript tracer sees the real values and records them as constants, which is right here
because the graph has a fixed input shape anyway. It needs ``onnx`` (checker) and
``onnxruntime`` (parity, latency), not ``onnxscript``.

The image metadata (``img_shape``, ``batch_input_shape``) is fixed at export time: it sets the
padding mask, so a graph only fits frames that were resized and padded to the same shapes. It is
stored in the model's ``metadata_props`` and every frame is checked against it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import statistics
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from torch import nn

from detrprune.evaluate.metrics import cpu_description
from detrprune.jobs import atomic_output

log = logging.getLogger(__name__)

INPUT_NAME = "inputs"
OUTPUT_NAMES = ("cls_logits", "bbox_cxcywh")
# A query whose outputs differ by more than this counts as off in ``onnx_queries_off``. In the
# two-stage model a near-tie at the top-k proposal boundary can make onnxruntime's TopK and
# torch's pick a different proposal: that query (and the queries attending to it) differ, the
# rest agree to float rounding. The count tells that apart from a graph that is wrong throughout.
QUERY_TOLERANCE = 1e-3
# Image metadata baked into the graph, kept in the ONNX file's metadata_props under these keys.
_META_KEYS = ("img_shape", "batch_input_shape")
_META_PREFIX = "detrprune."


class ExportError(RuntimeError):
    """The detector could not be exported to ONNX or run by onnxruntime (names the op)."""


@contextlib.contextmanager
def _padding_masks_kept() -> Iterator[None]:
    """Make mmdet build its padding masks while the graph is traced for ONNX.

    mmdet's ``DeformableDETR.pre_transformer`` drops the masks whenever
    ``torch.onnx.is_in_onnx_export()`` is true ("support torch2onnx without feeding masks"), so
    the exported graph would treat the padding of a letterboxed frame (KITTI at 256x77 padded to
    256x96) as image, and compute something else than the PyTorch model evaluated here. With the
    image metadata fixed at export time the masks are constants, so nothing stops us from keeping
    them. Nothing else on the ``_forward`` path (nor torch itself) reads this flag.
    """
    with mock.patch.object(torch.onnx, "is_in_onnx_export", new=lambda: False):
        yield


class OnnxForward(nn.Module):
    """The exported function: preprocessed image -> last decoder layer's logits and boxes.

    The same module is what PyTorch times in :func:`onnx_latency`, so both numbers measure the
    same computation. ``data_samples`` (image metadata) are fixed, as the graph's shapes are.
    """

    def __init__(self, detector: nn.Module, data_samples: list) -> None:
        super().__init__()
        self.detector = detector
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with _padding_masks_kept():
            all_cls, all_boxes = self.detector._forward(inputs, self.data_samples)
        return all_cls[-1], all_boxes[-1]


def _preprocess(detector: nn.Module, batch: Mapping[str, Any]) -> tuple[torch.Tensor, list]:
    """The batch as the network sees it: normalised, padded image tensor and its data samples."""
    data = detector.data_preprocessor(batch, False)
    inputs = data["inputs"]
    if inputs.shape[0] != 1:
        raise ValueError(f"ONNX export works on batch-1 inputs, got a batch of {inputs.shape[0]}")
    return inputs, data["data_samples"]


def _image_meta(data_samples: list) -> dict[str, list[int]]:
    """The metadata that shapes the graph (padding mask, padded size), as JSON-able lists."""
    meta = data_samples[0].metainfo
    return {key: [int(v) for v in meta[key]] for key in _META_KEYS}


def export_onnx(
    detector: nn.Module, batch: Mapping[str, Any], out_path: str | Path, opset: int = 17
) -> Path:
    """Export ``detector`` traced on ``batch`` (one frame) to ``out_path``; returns the path.

    The detector is moved to the CPU and put in eval mode (in place): on CPU mmcv's deformable
    attention runs its pure-PyTorch ``grid_sample`` path, which exports to standard ONNX
    (``GridSample``, opset >= 16); on CUDA it would be mmcv's compiled op, which onnxruntime
    lacks. The file is written atomically and passes ``onnx.checker`` (full check).
    """
    import onnx

    detector = detector.to("cpu").eval()
    inputs, data_samples = _preprocess(detector, batch)
    image_meta = _image_meta(data_samples)
    with atomic_output(out_path) as (tmp,):
        with torch.no_grad(), warnings.catch_warnings():
            # The tracer warns at every tensor-to-Python conversion (the level shapes): those
            # values are meant to be constants in a fixed-shape graph; parity checks the result.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
            try:
                torch.onnx.export(
                    # In eval mode: the exporter restores the wrapper's mode afterwards, and a
                    # new module's is training, which would leave the detector training.
                    OnnxForward(detector, data_samples).eval(),
                    (inputs,),
                    str(tmp),
                    dynamo=False,
                    opset_version=opset,
                    input_names=[INPUT_NAME],
                    output_names=list(OUTPUT_NAMES),
                )
            except torch.onnx.errors.UnsupportedOperatorError as error:
                raise ExportError(f"ONNX export: {str(error).splitlines()[0]}") from error
        model = onnx.load(str(tmp))
        foreign = sorted(
            {
                f"{n.domain}::{n.op_type}"
                for n in model.graph.node
                if n.domain not in ("", "ai.onnx")
            }
        )
        if foreign:
            raise ExportError(f"ONNX export: non-standard ops onnxruntime may lack: {foreign}")
        for key, value in image_meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = _META_PREFIX + key, json.dumps(value)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(tmp))
    log.info(
        "exported %s (opset %d, input %s, %s)", out_path, opset, list(inputs.shape), image_meta
    )
    return Path(out_path)


def onnx_session(onnx_path: str | Path, threads: int):
    """An onnxruntime CPU session on ``threads`` intra-op threads (sequential between ops)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    try:
        return ort.InferenceSession(
            str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime's own exception types; the message names the op
        first_line = str(error).strip().splitlines()[0]
        raise ExportError(
            f"{onnx_path}: onnxruntime cannot load the graph: {first_line}"
        ) from error


def graph_frames(
    detector: nn.Module, session, batches: Sequence[Mapping[str, Any]], onnx_path: str | Path
) -> list[tuple[torch.Tensor, list]]:
    """Preprocess ``batches`` and check each fits the graph: same input shape, same metadata.

    A frame resized or padded differently would need another padding mask than the baked one
    (or another input shape), and its result would be wrong or fail inside onnxruntime.
    """
    if not batches:
        raise ValueError("no frames given")
    (graph_input,) = session.get_inputs()
    expected_shape = list(graph_input.shape)
    props = session.get_modelmeta().custom_metadata_map
    expected_meta = {
        key: json.loads(props[_META_PREFIX + key])
        for key in _META_KEYS
        if _META_PREFIX + key in props
    }
    frames = []
    for i, batch in enumerate(batches):
        inputs, data_samples = _preprocess(detector, batch)
        where = data_samples[0].metainfo.get("img_path", f"frame {i}")
        if list(inputs.shape) != expected_shape:
            raise ValueError(
                f"{where}: input shape {list(inputs.shape)} differs from the shape "
                f"{expected_shape} {onnx_path} was exported with; resize and pad frames to the "
                "same scale"
            )
        meta = _image_meta(data_samples)
        for key, expected in expected_meta.items():
            if meta[key] != expected:
                raise ValueError(
                    f"{where}: {key} {meta[key]} differs from the {expected} {onnx_path} was "
                    "exported with (the padding mask is baked into the graph)"
                )
        frames.append((inputs, data_samples))
    return frames


@torch.no_grad()
def onnx_parity(
    detector: nn.Module, onnx_path: str | Path, batches: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Largest absolute difference between onnxruntime and PyTorch over ``batches``' frames.

    The PyTorch side is mmdet's own ``detector._forward`` on each frame's data samples (padding
    masks built from its ``img_shape``), not the export wrapper, so the check also covers the
    wrapper. Returns the max over both outputs and all frames, each output's max, the frame
    count, and how many of the frames' queries differ by more than :data:`QUERY_TOLERANCE`
    (``onnx_queries_off`` of ``onnx_queries``).
    """
    detector = detector.to("cpu").eval()
    session = onnx_session(onnx_path, threads=torch.get_num_threads())
    frames = graph_frames(detector, session, batches, onnx_path)
    per_output = dict.fromkeys(OUTPUT_NAMES, 0.0)
    queries_off = queries = 0
    for inputs, data_samples in frames:
        all_cls, all_boxes = detector._forward(inputs, data_samples)
        expected = dict(zip(OUTPUT_NAMES, (all_cls[-1], all_boxes[-1]), strict=True))
        got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs.numpy()})
        query_deviation: list[torch.Tensor] = []
        for name, value in zip(OUTPUT_NAMES, got, strict=True):
            reference = expected[name]
            if tuple(value.shape) != tuple(reference.shape):
                raise ValueError(
                    f"{onnx_path}: output {name} has shape {value.shape}, PyTorch gives "
                    f"{tuple(reference.shape)}"
                )
            deviation = (torch.from_numpy(value) - reference).abs()
            per_output[name] = max(per_output[name], float(deviation.max()))
            query_deviation.append(deviation.amax(-1))  # (batch, queries)
        off = torch.stack(query_deviation).amax(0) > QUERY_TOLERANCE
        queries_off += int(off.sum())
        queries += off.numel()
    record: dict[str, Any] = {
        "onnx_max_abs_diff": max(per_output.values()),
        "onnx_parity_frames": len(frames),
        "onnx_queries_off": queries_off,
        "onnx_queries": queries,
    }
    record.update({f"onnx_max_abs_diff_{name}": diff for name, diff in per_output.items()})
    return record


def _median_p90(times_ms: list[float]) -> tuple[float, float]:
    """Median and 90th percentile (nearest rank), as :func:`evaluation.cpu_latency` reports."""
    ordered = sorted(times_ms)
    return statistics.median(ordered), ordered[
        min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)
    ]


@torch.no_grad()
def onnx_latency(
    detector: nn.Module,
    onnx_path: str | Path,
    batches: Sequence[Mapping[str, Any]],
    warmup: int,
    runs: int,
    threads: int,
) -> dict[str, Any]:
    """Median and p90 wall time of onnxruntime (CPU) and of PyTorch on the same tensor forward.

    ``detector`` preprocesses the frames (not timed) and gives the PyTorch number, which runs the
    exported function itself (backbone to head outputs, no pre/post-processing), unlike
    :func:`evaluation.cpu_latency`'s ``test_step``. Both use ``threads`` intra-op threads and
    cycle through the frames; onnxruntime is timed first, then PyTorch, so the idle threads of
    one do not spin against the other.
    """
    if runs < 1:
        raise ValueError(f"latency runs must be >= 1, got {runs}")
    detector = detector.to("cpu").eval()
    session = onnx_session(onnx_path, threads)
    frames = graph_frames(detector, session, batches, onnx_path)
    feeds = [{INPUT_NAME: inputs.numpy()} for inputs, _ in frames]

    onnx_ms = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        session.run(None, feeds[i % len(feeds)])
        if i >= warmup:
            onnx_ms.append(1000.0 * (time.perf_counter() - start))

    forwards = [(OnnxForward(detector, samples), inputs) for inputs, samples in frames]
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch_ms = []
    try:
        for i in range(warmup + runs):
            forward, inputs = forwards[i % len(forwards)]
            start = time.perf_counter()
            forward(inputs)
            if i >= warmup:
                torch_ms.append(1000.0 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous_threads)

    onnx_median, onnx_p90 = _median_p90(onnx_ms)
    torch_median, torch_p90 = _median_p90(torch_ms)
    return {
        "onnx_latency_ms_median": onnx_median,
        "onnx_latency_ms_p90": onnx_p90,
        "torch_forward_latency_ms_median": torch_median,
        "torch_forward_latency_ms_p90": torch_p90,
        "onnx_latency_runs": runs,
        "onnx_latency_device": cpu_description(threads),
    }


def export_checkpoint(
    checkpoint: str | Path,
    out_onnx: str | Path,
    *,
    val_json: Path,
    data_root: Path,
    input_scale: tuple[int, int],
    frames: int,
    threads: int,
    warmup: int,
    runs: int,
) -> dict[str, Any]:
    """Export one of our checkpoints, check it on ``frames`` real val images and time it.

    Returns the record ``onnx.json`` holds: the variant, onnxruntime's largest deviation from
    PyTorch and both latencies (same tensor forward, same threads).
    """
    from detrprune.evaluate.metrics import load_val_batches
    from detrprune.train.checkpoint import load_detector

    detector, _, meta = load_detector(Path(checkpoint))
    loaded = load_val_batches(val_json, data_root, input_scale, frames)
    # The graph is fixed to the first frame's resized shape; real KITTI frames differ by a
    # pixel or two, which can change it. Those are left out of the check, and counted.
    shape = tuple(loaded[0]["data_samples"][0].metainfo["img_shape"])
    batches = [b for b in loaded if tuple(b["data_samples"][0].metainfo["img_shape"]) == shape]
    if len(batches) < len(loaded):
        log.info(
            "%d of %d frames resize to another shape than %s: not checked",
            len(loaded) - len(batches),
            len(loaded),
            shape,
        )
    export_onnx(detector, batches[0], out_onnx)
    record: dict[str, Any] = {
        "variant": meta["variant"],
        "onnx_frames_skipped": len(loaded) - len(batches),
    }
    record.update(onnx_parity(detector, out_onnx, batches))
    record.update(onnx_latency(detector, out_onnx, batches, warmup, runs, threads))
    record["onnx_mb"] = Path(out_onnx).stat().st_size / 2**20
    log.info(
        "%s: onnxruntime max abs diff %.3g over %d frames; %.1f ms vs PyTorch %.1f ms",
        record["variant"],
        record["onnx_max_abs_diff"],
        record["onnx_parity_frames"],
        record["onnx_latency_ms_median"],
        record["torch_forward_latency_ms_median"],
    )
    return record
