"""2:4 semi-structured sparsity on the GPU: which Linears follow an N:M pattern, and how much
faster their sparse tensor-core kernels make the detector and each layer.

A weight follows N:M when every group of M consecutive input weights (along each row of the
``(out, in)`` weight) holds at most N nonzeros. Ampere and newer GPUs (compute capability >=
8.0) multiply 2:4 fp16 weights on sparse tensor cores (``torch.sparse.to_sparse_semi_structured``:
cuSPARSELt or CUTLASS). Whether that pays off in a Deformable DETR is a measurement, not a
given: the speedup is at most 2x on the matrix multiply, the layers are small next to the
backbone, and deformable attention and the rest do not change. Hence two numbers:

- end to end, ``model.test_step`` of the dense fp16 twin against the same model with every
  2:4 Linear on the sparse kernel, interleaved, CUDA events, medians;
- per layer, each converted Linear alone on its real input shape (captured during one
  forward), dense fp16 against sparse, interleaved: which layers gain.

Nothing here raises on hardware that cannot run the kernels: :func:`time_semi_structured`
returns its keys with ``None`` and the reason (one line, also logged).
"""

from __future__ import annotations

import copy
import logging
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from detrprune.constants import (
    SEMI_STRUCTURED_COLUMNS,
    SEMI_STRUCTURED_DETAIL_KEYS,
    SEMI_STRUCTURED_TEXT_COLUMNS,
)
from detrprune.prune.weights import layer_role

log = logging.getLogger(__name__)

# The record's keys (metrics.json); the columns also reach results/summary.csv.
TIMING_KEYS = (
    *SEMI_STRUCTURED_COLUMNS,
    *SEMI_STRUCTURED_TEXT_COLUMNS,
    *SEMI_STRUCTURED_DETAIL_KEYS,
)

# The dense operand's shape does not matter (torch pads it); the sparse weight's does.
_DTYPE = torch.float16


def follows_nm(weight: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """True when ``weight`` (out, in) has at most ``n`` nonzeros in every group of ``m``
    consecutive input weights and at least one nonzero.

    An all-zero weight satisfies the pattern trivially but is not N:M pruning (mmcv
    initialises ``sampling_offsets`` and ``attention_weights`` to zero; global magnitude pruning
    can empty a layer), so it is not counted.
    """
    if weight.dim() != 2 or weight.shape[1] % m or weight.numel() == 0:
        return False
    nonzero = (weight.detach() != 0).reshape(weight.shape[0], weight.shape[1] // m, m).sum(-1)
    return bool((nonzero <= n).all()) and bool(nonzero.any())


def nm_sparse_linears(model: nn.Module, n: int = 2, m: int = 4) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` layers of ``model`` whose weight follows the N:M pattern
    (:func:`follows_nm`), in module order.

    Read from the weights themselves, so evaluation does not need the pruning spec. A layer
    whose in_features is not a multiple of ``m``, a dense layer and an all-zero layer are not
    listed. Note: an unstructured-pruned layer can follow 2:4 by chance (at ~90 % sparsity a
    small layer often does); it is listed, since the sparse kernel could run it all the same.
    """
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        weight = module.weight
        # A twin already converted holds a SparseSemiStructuredTensor: not a dense weight to read.
        if isinstance(weight, torch.sparse.SparseSemiStructuredTensor):
            continue
        if follows_nm(weight, n, m):
            found.append((name, module))
    return found


def layer_kind(name: str) -> str:
    """A Linear's kind from its module name: ``<part> attention`` or ``<part> ffn`` for the
    encoder and decoder, ``head`` (``bbox_head.*``) or ``other`` (e.g. the two-stage
    ``memory_trans_fc``)."""
    parts = name.split(".")
    if parts[0] == "bbox_head":
        return "head"
    kind = layer_role(name)
    if kind == "other":
        return "other"
    # Encoder layers see every image token (~10 k at KITTI full size), decoder layers only the
    # queries: the same kind gains very differently in the two, so they are kept apart.
    return f"{parts[0]} {kind}" if parts[0] in ("encoder", "decoder") else kind


def group_layer_speedups(speedups: Mapping[str, float]) -> dict[str, dict[str, float | int]]:
    """Per-layer speedups grouped by :func:`layer_kind`: ``{kind: {layers, median, min,
    max}}``, so that a report can say which layers gain."""
    by_kind: dict[str, list[float]] = {}
    for name, speedup in speedups.items():
        by_kind.setdefault(layer_kind(name), []).append(speedup)
    return {
        kind: {
            "layers": len(values),
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
        for kind, values in sorted(by_kind.items())
    }


def semi_structured_backend() -> type:
    """The ``SparseSemiStructuredTensor`` subclass the conversion uses: cuSPARSELt where torch
    has it (as ``to_sparse_semi_structured`` picks), else CUTLASS.

    ``to_sparse_semi_structured`` picks cuSPARSELt unless ``_FORCE_CUTLASS`` is set, without
    checking that cuSPARSELt is there; choosing here keeps a torch build without it on the
    CUTLASS kernels rather than failing.
    """
    from torch.sparse import (
        SparseSemiStructuredTensor,
        SparseSemiStructuredTensorCUSPARSELT,
        SparseSemiStructuredTensorCUTLASS,
    )

    cusparselt = torch.backends.cusparselt.is_available()
    if SparseSemiStructuredTensor._FORCE_CUTLASS or not cusparselt:
        return SparseSemiStructuredTensorCUTLASS
    return SparseSemiStructuredTensorCUSPARSELT


def to_semi_structured(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (CUDA, fp16, 2:4) in the compressed form of :func:`semi_structured_backend`:
    what ``torch.sparse.to_sparse_semi_structured`` returns, on the backend chosen there."""
    return semi_structured_backend().from_dense(weight.detach().contiguous())


def shape_unsupported_reason(shape: Sequence[int], backend: type | None = None) -> str | None:
    """Why a weight of ``shape`` (out, in) cannot be converted for fp16, or None.

    The sparse operand must be at least, and a multiple of, the backend's minimum block
    (``_DTYPE_SHAPE_CONSTRAINTS``; torch 2.13: 16 x 16 for cuSPARSELt, 32 x 64 for CUTLASS);
    e.g. the 3-class head's (3, E) weight is not.
    """
    backend = backend or semi_structured_backend()
    limits = backend._DTYPE_SHAPE_CONSTRAINTS[_DTYPE]
    rows, cols = limits.sparse_min_rows, limits.sparse_min_cols
    out_features, in_features = shape
    if out_features % rows or in_features % cols or not (out_features and in_features):
        return (
            f"weight {tuple(shape)} is not a nonzero multiple of ({rows}, {cols}) "
            f"({backend.BACKEND} fp16)"
        )
    return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}"


def semi_structured_unsupported_reason(device: torch.device | str | None = None) -> str | None:
    """None when 2:4 fp16 sparse matmuls run on ``device`` (default: the current CUDA
    device), else why not, in one line ("no CUDA device ...", "compute capability 7.5 <
    8.0 ...", or the exception a tiny conversion and matmul raised)."""
    if not torch.cuda.is_available():
        return (
            f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
            "2:4 sparse kernels need a CUDA GPU"
        )
    device = torch.device(device if device is not None else "cuda")
    if device.type != "cuda":
        return f"device {device} is not a CUDA device: 2:4 sparse kernels need a CUDA GPU"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 0):
        return (
            f"compute capability {major}.{minor} < 8.0 on {torch.cuda.get_device_name(device)}: "
            "2:4 sparse tensor cores need Ampere or newer"
        )
    if not hasattr(torch.sparse, "to_sparse_semi_structured"):
        return f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
    # The build may still lack the kernels (cuSPARSELt, CUTLASS for this arch): try them.
    try:
        dense = torch.tensor([0, 0, 1, 1], dtype=_DTYPE, device=device).tile(64, 16)
        ones = torch.ones(8, 64, dtype=_DTYPE, device=device)
        product = torch.nn.functional.linear(ones, dense)
        probe = torch.nn.functional.linear(ones, to_semi_structured(dense))
        torch.cuda.synchronize(device)
        if not torch.equal(probe, product):
            return "2:4 probe: the sparse matmul does not match the dense one"
    except Exception as error:  # any failure means "cannot run here"
        return f"2:4 probe failed on {torch.cuda.get_device_name(device)}: {_one_line(error)}"
    return None


def _skipped(reason: str) -> dict[str, Any]:
    log.info("2:4 GPU timing skipped: %s", reason)
    return {**dict.fromkeys(TIMING_KEYS), "gpu_2to4_skipped_reason": reason}


def _sparse_twin(
    dense: nn.Module, names: Sequence[str], backend: type
) -> tuple[nn.Module, dict[str, str]]:
    """A copy of the fp16 CUDA twin ``dense`` with each named Linear's weight compressed;
    returns it and the layers kept dense, with why."""
    sparse = copy.deepcopy(dense)
    kept: dict[str, str] = {}
    modules = dict(sparse.named_modules())
    for name in names:
        linear = modules[name]
        reason = shape_unsupported_reason(linear.weight.shape, backend)
        if reason is None:
            try:
                packed = backend.from_dense(linear.weight.detach().contiguous())
            except Exception as error:  # the layer stays dense, with why
                reason = f"conversion failed: {_one_line(error)}"
            else:
                linear.weight = nn.Parameter(packed, requires_grad=False)
        if reason is not None:
            kept[name] = reason
    return sparse, kept


def _capture_inputs(model: nn.Module, names: Sequence[str], run: Callable[[], Any]) -> dict:
    """The first input tensor each named Linear received while ``run()`` ran (a Linear that
    is never called as a module, e.g. ``nn.MultiheadAttention.out_proj``, whose weight the
    attention uses directly, gets none)."""
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def record(_module: nn.Module, args: tuple, _output: Any) -> None:
            captured.setdefault(name, args[0].detach().clone())

        return record

    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _event_ms(fn: Callable[[], Any], repeats: int = 1) -> float:
    """GPU time (ms) of ``repeats`` calls of ``fn`` between two CUDA events, per call."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def _interleaved_medians(
    dense: Callable[[], Any], sparse: Callable[[], Any], rounds: int, repeats: int = 1
) -> tuple[float, float]:
    """Median per-call times (ms) of ``dense`` and ``sparse``, timed in turn each round (the
    one timed first alternating), so drift and clock changes hit both alike."""
    times: dict[str, list[float]] = {"dense": [], "sparse": []}
    pair = (("dense", dense), ("sparse", sparse))
    for i in range(rounds):
        for key, fn in pair if i % 2 == 0 else pair[::-1]:
            times[key].append(_event_ms(fn, repeats))
    return statistics.median(times["dense"]), statistics.median(times["sparse"])


@torch.no_grad()
def time_semi_structured(
    model: nn.Module,
    batches: Sequence[Mapping[str, Any]],
    *,
    warmup: int,
    runs: int,
    layer_runs: int = 20,
    layer_repeats: int = 10,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """GPU time of ``model.test_step`` with its 2:4 Linears on the sparse kernels, against the
    same model dense, both fp16; and each converted Linear's own speedup.

    ``model`` is not changed: two copies are made on the current CUDA device, the dense fp16
    twin and the sparse twin (each of the Linears in ``names``, default
    :func:`nm_sparse_linears`, with its weight compressed; those whose shape the kernel does
    not take stay dense, listed in ``gpu_2to4_kept_dense`` with why, and logged). Runs cycle
    through ``batches`` (mmdet test batches, e.g. from ``load_val_batches``), ``warmup``
    untimed per twin, then ``runs`` per twin, interleaved round by round (CUDA events,
    synchronised per run, as :func:`~detrprune.evaluate.metrics.gpu_latency`).

    Per layer: each Linear's first real input (captured by a forward hook) through the dense
    and the sparse layer, ``layer_runs`` interleaved rounds of ``layer_repeats`` calls
    (a single small call is mostly launch time; the repeats average it). A layer never called
    as a module (``nn.MultiheadAttention.out_proj``) runs sparse end to end but has no
    per-layer time.

    Returns :data:`TIMING_KEYS` and ``gpu_2to4_skipped_reason`` (None when timed). Where the
    kernels cannot run (no CUDA, compute capability < 8.0, a torch without them), or the
    sparse twin fails, the timing keys are None and the reason says why; nothing is raised.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    reason = semi_structured_unsupported_reason()
    if reason is not None:
        return _skipped(reason)
    # The kernels are 2:4 only (a 1:4 weight is 2:4 as well).
    names = list(names) if names is not None else [name for name, _ in nm_sparse_linears(model)]
    if not names:
        return _skipped("no Linear follows 2:4")
    backend = semi_structured_backend()
    # fp16 twins under autocast. model.half() alone fails at the first convolution: mmengine's
    # data preprocessor returns fp32 images (measured: "Input type (float) and weight type
    # (Half) should be the same"), and mmdet builds positional encodings and reference points
    # in fp32. Autocast casts those at each conv/linear, as in mmcv's supported amp path
    # (its deformable-attention op follows the value's dtype). The weights are already fp16, so
    # autocast casts no weight, and a SparseSemiStructuredTensor weight (fp16) is left as it
    # is. Both twins run the same way: the only difference timed is the weights' format.
    dense = copy.deepcopy(model).half().to("cuda").eval()
    try:
        sparse, kept = _sparse_twin(dense, names, backend)
    except Exception as error:  # report, do not lose the evaluation
        log.warning("2:4: building the sparse twin failed", exc_info=True)
        return _skipped(f"building the sparse twin failed: {_one_line(error)}")
    converted = [name for name in names if name not in kept]
    if kept:
        log.info(
            "2:4: %d of %d Linears stay dense: %s",
            len(kept),
            len(names),
            "; ".join(f"{k}: {v}" for k, v in kept.items()),
        )
    if not converted:
        return _skipped(f"none of the {len(names)} 2:4 Linears has a shape the kernel takes")

    def step(twin: nn.Module, i: int) -> Callable[[], Any]:
        def run() -> Any:
            with torch.autocast("cuda", dtype=_DTYPE):
                return twin.test_step(batches[i % len(batches)])

        return run

    try:
        inputs = _capture_inputs(dense, converted, step(dense, 0))
        for i in range(warmup):
            step(dense, i)()
            step(sparse, i)()
        torch.cuda.synchronize()
        dense_ms: list[float] = []
        sparse_ms: list[float] = []
        for i in range(runs):
            order = ((dense, dense_ms), (sparse, sparse_ms))
            for twin, times in order if i % 2 == 0 else order[::-1]:
                times.append(_event_ms(step(twin, i)))
    except Exception as error:  # report, do not lose the evaluation
        log.warning("2:4: timing the sparse twin failed", exc_info=True)
        return _skipped(f"running the sparse twin failed: {_one_line(error)}")

    layers = _time_layers(dense, sparse, inputs, layer_runs, layer_repeats)
    speedups = {name: timing["speedup"] for name, timing in layers.items()}
    dense_median, sparse_median = statistics.median(dense_ms), statistics.median(sparse_ms)
    errors = [timing["max_rel_err"] for timing in layers.values()]
    record = {
        "gpu_latency_ms_median_2to4": sparse_median,
        "gpu_latency_ms_median_dense_fp16": dense_median,
        "gpu_speedup_2to4": dense_median / sparse_median,
        "gpu_2to4_layers_converted": len(converted),
        "gpu_2to4_layers_kept_dense": len(kept),
        "gpu_2to4_max_rel_err": max(errors) if errors else None,
        "gpu_2to4_backend": backend.BACKEND,
        "gpu_2to4_device": f"cuda ({torch.cuda.get_device_name()})",
        "gpu_layer_speedup_2to4": speedups,
        "gpu_layer_speedup_2to4_by_kind": group_layer_speedups(speedups),
        "gpu_layer_timing_2to4": layers,
        "gpu_2to4_kept_dense": kept,
        "gpu_2to4_skipped_reason": None,
    }
    log.info(
        "2:4 on %s (%s): dense fp16 %.3f ms, 2:4 %.3f ms, speedup %.3f; %d Linears sparse, "
        "%d dense; by kind: %s",
        record["gpu_2to4_device"],
        backend.BACKEND,
        dense_median,
        sparse_median,
        record["gpu_speedup_2to4"],
        len(converted),
        len(kept),
        {k: round(v["median"], 3) for k, v in record["gpu_layer_speedup_2to4_by_kind"].items()},
    )
    return record


def _time_layers(
    dense: nn.Module,
    sparse: nn.Module,
    inputs: Mapping[str, torch.Tensor],
    rounds: int,
    repeats: int,
) -> dict[str, dict[str, Any]]:
    """Each captured Linear alone, dense fp16 against sparse, on its captured input: times
    (microseconds per call), speedup (dense / sparse) and the outputs' max relative error."""
    dense_modules, sparse_modules = dict(dense.named_modules()), dict(sparse.named_modules())
    layers: dict[str, dict[str, Any]] = {}
    for name, captured in inputs.items():
        x = captured.to(_DTYPE)
        dense_layer, sparse_layer = dense_modules[name], sparse_modules[name]
        try:
            reference = dense_layer(x)
            error = (sparse_layer(x) - reference).abs().max() / reference.abs().max().clamp_min(
                1e-6
            )
            for _ in range(3):  # warm-up: kernel selection, cuSPARSELt plan
                dense_layer(x)
                sparse_layer(x)
            dense_ms, sparse_ms = _interleaved_medians(
                lambda layer=dense_layer, x=x: layer(x),
                lambda layer=sparse_layer, x=x: layer(x),
                rounds,
                repeats,
            )
        except Exception:  # one layer's failure costs only its own number
            log.warning("2:4: timing %s alone failed", name, exc_info=True)
            continue
        layers[name] = {
            "kind": layer_kind(name),
            "input_shape": list(x.shape),
            "weight_shape": list(dense_layer.weight.shape),
            "dense_us": 1000 * dense_ms,
            "sparse_us": 1000 * sparse_ms,
            "speedup": dense_ms / sparse_ms,
            "max_rel_err": float(error),
        }
    return layers
