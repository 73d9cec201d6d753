"""2:4 semi-structured sparsity on the GPU: the detector dense fp16 against its 2:4 twin.

Every Linear of the transformer (encoder and decoder, sampling offsets kept dense) is pruned to
2:4 by magnitude, as the workflow's ``scope: "2:4"`` does (``--modules``/``--layers`` choose
fewer, as a method's keys do: ``--modules encoder --layers ffn`` is the demo's
``weight_2to4``), and
:func:`~detrprune.evaluate.semi_structured.time_semi_structured` times ``model.test_step``
with those weights on the sparse tensor-core kernels against the dense fp16 model
(interleaved, CUDA events), then each converted Linear alone on its real input shape::

    .venv/bin/python bench/semi_structured.py               # the demo size (config.yaml)
    .venv/bin/python bench/semi_structured.py --full-size   # R50, 6+6 layers (configs/kitti.yaml)
    .venv/bin/python bench/semi_structured.py --full-size --modules encoder --layers ffn

Weights: ``results/baseline/model.pth`` at the demo size when it exists, else a freshly
initialised model (speed does not depend on trained values; the layers mmcv initialises to zero
get small random weights first, as training gives them). Inputs: synthetic images at the
config's input size. Prints markdown tables (end to end; per-layer speedups by kind) and writes
everything to JSON (``--out``). Without a GPU that runs 2:4 kernels (no CUDA, compute capability
< 8.0, ...) it prints why, writes the JSON with the reason and exits 0; with
``DETRPRUNE_REQUIRE_GPU=1`` (``make gpu-smoke``) a missing CUDA device or a failure on one is
exit 1 (a GPU older than Ampere still exits 0: it cannot run the kernels).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from detrprune.constants import NM_DEFAULT_PARTS, SPARSITY_PARTS, WEIGHT_LAYER_KINDS
from detrprune.evaluate.semi_structured import (
    nm_sparse_linears,
    semi_structured_unsupported_reason,
    time_semi_structured,
)
from detrprune.jobs import write_json
from detrprune.prune.weights import weight_prune
from detrprune.train.model import build_detector, model_config, synthetic_batch

REPO = Path(__file__).resolve().parent.parent
# The command-line settings the JSON record keeps.
SETTINGS = ("warmup", "runs", "layer_runs", "layer_repeats", "images", "modules", "layers")
BASELINE = Path("results/baseline/model.pth")


def model_settings(full_size: bool) -> dict[str, Any]:
    """``model`` of config.yaml, with configs/kitti.yaml's values over it for the full size."""
    model = yaml.safe_load((REPO / "config.yaml").read_text())["model"]
    if full_size:
        model.update(yaml.safe_load((REPO / "configs" / "kitti.yaml").read_text())["model"])
    return model


def load_model(settings: dict[str, Any], checkpoint: Path | None) -> tuple[nn.Module, str]:
    """The detector from ``checkpoint``, or freshly initialised without one; and which."""
    if checkpoint is not None:
        from detrprune.train.checkpoint import load_detector

        model, _, _ = load_detector(checkpoint)
        return model.eval(), str(checkpoint)
    from mmengine.logging import MMLogger

    # init_weights logs one paragraph per parameter at INFO.
    MMLogger.get_instance("mmengine").setLevel(logging.WARNING)
    torch.manual_seed(0)
    model = build_detector(model_config(settings))
    model.init_weights()
    return model.eval(), "random init"


@torch.no_grad()
def prune_transformer_2to4(
    model: nn.Module,
    modules: tuple[str, ...] = NM_DEFAULT_PARTS,
    layers: tuple[str, ...] = WEIGHT_LAYER_KINDS,
) -> list[str]:
    """The workflow's ``scope: "2:4"`` with a method's ``modules`` and ``layers`` (default:
    every Linear of the encoder and decoder, sampling offsets kept dense); returns the names of
    the Linears that now follow 2:4.

    A Linear that is all zero (mmcv's initial ``attention_weights``) first gets small random
    weights: a trained model's are not zero, and an all-zero layer does not count as 2:4.
    """
    for module in model.modules():
        if isinstance(module, nn.Linear) and not module.weight.any():
            module.weight.normal_(0.0, 1e-3)
    weight_prune(model, 0.5, "2:4", modules, layers)
    return [name for name, _ in nm_sparse_linears(model)]


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(record: dict[str, Any]) -> str:
    """The end-to-end table and the per-layer speedups by kind (or the skip reason)."""
    kept = record["gpu_2to4_layers_kept_dense"]
    layers = f"{record['gpu_2to4_layers_converted'] or 'n/a'} / {'n/a' if kept is None else kept}"
    lines = [
        "| model | weights | 2:4 Linears | sparse / dense | dense fp16 ms | 2:4 ms | speedup |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {record['model']} {record['input_hw'][0]}x{record['input_hw'][1]} "
        f"| {record['weights']} | {record['linears_2to4']} | {layers} "
        f"| {_number(record['gpu_latency_ms_median_dense_fp16'])} "
        f"| {_number(record['gpu_latency_ms_median_2to4'])} "
        f"| {_number(record['gpu_speedup_2to4'])} |",
    ]
    if record["gpu_2to4_skipped_reason"]:
        lines += ["", f"2:4 GPU timing skipped: {record['gpu_2to4_skipped_reason']}"]
        return "\n".join(lines)
    lines += [
        "",
        "| layer kind | layers | median speedup | min | max |",
        "| --- | --- | --- | --- | --- |",
    ]
    for kind, group in record["gpu_layer_speedup_2to4_by_kind"].items():
        lines.append(
            f"| {kind} | {group['layers']} | {group['median']:.3f} | {group['min']:.3f} "
            f"| {group['max']:.3f} |"
        )
    for name, reason in record["gpu_2to4_kept_dense"].items():
        lines.append(f"\nkept dense: {name}: {reason}")
    lines.append(
        f"\n{record['gpu_2to4_device']}, {record['gpu_2to4_backend']}; "
        f"deformable attention: {record['gpu_deformable_attention']}; "
        f"max relative error of a sparse layer: {_number(record['gpu_2to4_max_rel_err'], 4)}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--full-size", action="store_true", help="configs/kitti.yaml's R50 model and input")
    add("--checkpoint", type=Path, help=f"weights (default: {BASELINE} at the demo size if there)")
    add("--warmup", type=int, default=10, help="untimed test_step runs per twin")
    add("--runs", type=int, default=50, help="timed test_step runs per twin, interleaved")
    add("--layer-runs", type=int, default=20, help="interleaved rounds per Linear alone")
    add("--layer-repeats", type=int, default=10, help="calls per timed round of a Linear")
    add("--images", type=int, default=2, help="synthetic images cycled")
    add("--modules", nargs="+", choices=SPARSITY_PARTS, default=list(NM_DEFAULT_PARTS))
    add("--layers", nargs="+", choices=WEIGHT_LAYER_KINDS, default=list(WEIGHT_LAYER_KINDS))
    add("--out", type=Path, help="JSON (default: results/bench/semi_structured[_full_size].json)")
    args = parser.parse_args(argv)
    if min(args.runs, args.layer_runs, args.layer_repeats, args.images) < 1 or args.warmup < 0:
        parser.error("--runs/--layer-runs/--layer-repeats/--images must be >= 1, --warmup >= 0")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    name = "full-size" if args.full_size else "demo"
    out = args.out or Path(
        f"results/bench/semi_structured{'_full_size' if args.full_size else ''}.json"
    )
    checkpoint = args.checkpoint
    if checkpoint is None and not args.full_size and BASELINE.exists():
        checkpoint = BASELINE
    if checkpoint is not None and not checkpoint.exists():
        print(f"error: {checkpoint}: no such file", file=sys.stderr)
        return 2

    settings = model_settings(args.full_size)
    width, height = (int(v) for v in settings["input_scale"])
    model, weights = load_model(settings, checkpoint)
    pruned = prune_transformer_2to4(model, tuple(args.modules), tuple(args.layers))
    found = [layer for layer, _ in nm_sparse_linears(model)]
    batches = [synthetic_batch((height, width), seed=i) for i in range(args.images)]
    reason = semi_structured_unsupported_reason()
    path = None
    if reason is None:
        from detrprune.evaluate.metrics import deformable_attention_path

        # On the fp32 model: the twins' kernels are the same, only their dtype differs.
        path = deformable_attention_path(model.to("cuda"), batches[0])
    result = time_semi_structured(
        model,
        batches,
        warmup=args.warmup,
        runs=args.runs,
        layer_runs=args.layer_runs,
        layer_repeats=args.layer_repeats,
    )
    record = {
        "model": name,
        "input_hw": [height, width],
        "weights": weights,
        "pruned_2to4": pruned,
        "linears_2to4": len(found),
        "gpu_deformable_attention": path,
        "settings": {key: getattr(args, key) for key in SETTINGS},
        "torch": torch.__version__,
        **result,
    }
    print(markdown(record))
    write_json(record, out)
    print(f"written to {out}")
    skipped = record["gpu_2to4_skipped_reason"]
    if not skipped:
        return 0
    # A GPU that runs the kernels and still no timing is a failure; so is any skip but an
    # older GPU's when a GPU run is required.
    older_gpu = reason is not None and reason.startswith("compute capability")
    if reason is None or (os.environ.get("DETRPRUNE_REQUIRE_GPU") == "1" and not older_gpu):
        print(f"2:4 GPU timing required but skipped: {skipped}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
