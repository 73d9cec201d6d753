"""Hardware-aligned channels: filter pruning with round_to 1 against round_to 8, interleaved.

Run after the workflow has trained the baseline (``make demo``)::

    .venv/bin/python bench/round_to.py                                # backbone, r10 r30
    .venv/bin/python bench/round_to.py --scopes backbone+ffn --ratios 30 --rounds 8

Each (scope, ratio) is pruned zero-shot from ``results/baseline/model.pth`` once per rounding,
exported to ONNX, and every model (the baseline too) is timed in one process on the same tensor
forward in PyTorch and onnxruntime, rounds rotating the model order
(:mod:`detrprune.evaluate.alignment`). It prints per (scope, ratio) each rounding's median and
the speedup of the aligned model over the unaligned one with its paired-round 95 % interval,
and writes every run to JSON (``--out``). A measurement, not a gate: exit 0 whatever the
numbers, non-zero with a one-line error when the baseline, config or data is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from detrprune.evaluate.alignment import compare_roundings, rounding_table
from detrprune.evaluate.analysis import SummaryError
from detrprune.evaluate.metrics import cpu_description, load_val_batches
from detrprune.jobs import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--baseline", type=Path, default=Path("results/baseline/model.pth"), help="checkpoint")
    add("--config", type=Path, default=Path("config.yaml"), help="workflow config")
    add("--val-json", type=Path, default=Path("data/coco/val.json"), help="COCO json of val")
    add("--data-root", type=Path, default=Path("data/kitti"), help="folder of training/image_2")
    add("--scopes", nargs="+", default=["backbone", "backbone+residual+ffn"], help="filter scopes")
    # At 50 % ResNet-18's halved widths are multiples of 8 already: the roundings coincide.
    add("--ratios", type=int, nargs="+", default=[10, 30], help="ratios (percent)")
    add("--roundings", type=int, nargs="+", default=[1, 8], help="round_to values compared")
    add("--rounds", type=int, default=6, help="interleaved rounds")
    add("--runs", type=int, default=8, help="timed runs per model, runtime and round")
    add("--warmup", type=int, default=3, help="untimed runs per model and runtime first")
    add("--images", type=int, default=3, help="val images cycled")
    add("--threads", type=int, help="threads; none: the config's evaluate.threads")
    add("--out", type=Path, default=Path("results/bench/round_to.json"), help="JSON record")
    args = parser.parse_args(argv)
    if min(args.rounds, args.runs, args.images, *args.roundings) < 1 or len(args.roundings) < 2:
        parser.error("--rounds/--runs/--images must be >= 1; give two or more --roundings >= 1")
    try:
        for path in (args.baseline, args.config, args.val_json, args.data_root):
            if not path.exists():
                raise SummaryError(f"{path}: no such file or folder")
        config = yaml.safe_load(args.config.read_text())
        input_scale = tuple(int(v) for v in config["model"]["input_scale"])
        threads = args.threads or int(config["evaluate"]["threads"])
        batches = load_val_batches(args.val_json, args.data_root, input_scale, args.images)
        result = compare_roundings(
            args.baseline,
            batches,
            scopes=args.scopes,
            ratios=args.ratios,
            roundings=args.roundings,
            threads=threads,
            rounds=args.rounds,
            runs_per_round=args.runs,
            warmup=args.warmup,
        )
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError, SummaryError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    low, high = args.roundings[0], args.roundings[-1]
    rows = rounding_table(result, args.roundings)
    print(f"{cpu_description(threads)}; {args.rounds} rounds x {args.runs} runs per model")
    print(
        f"{'model':<34} {'runtime':<12} "
        + " ".join(f"{f'round{k} ms':>10}" for k in args.roundings)
        + f"  round{high} vs round{low}: speedup [95% CI]"
    )
    for row in rows:
        for runtime in ("pytorch", "onnxruntime"):
            cells = " ".join(f"{row[f'{runtime}_round{k}_ms']:>10.1f}" for k in args.roundings)
            ci_low, ci_high = row[f"{runtime}_speedup_ci95"]
            print(
                f"{row['model']:<34} {runtime:<12} {cells}  "
                f"{row[f'{runtime}_speedup']:.3f} [{ci_low:.3f}, {ci_high:.3f}]"
            )
    base = result["baseline"]
    medians = [f"{r} {base[r]['latency_ms_median']:.1f} ms" for r in ("pytorch", "onnxruntime")]
    print("baseline: " + ", ".join(medians))
    record = {
        "latency_device": cpu_description(threads),
        "input_scale": list(input_scale),
        "settings": {k: v for k, v in vars(args).items() if not isinstance(v, Path)},
        "table": rows,
        "models": result,
    }
    write_json(record, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
