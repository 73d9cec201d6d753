"""Deformable attention's sampling on CPU: mmcv's strided grid against a contiguous one.

mmcv's PyTorch deformable attention hands ``grid_sample`` a non-contiguous grid, on which
PyTorch's CPU kernel is slow and hardly faster with fewer sampling points; the workflow makes
both tensors contiguous (:func:`detrprune.train.model.contiguous_deformable_sampling`). This
times, in one process and interleaved, the detector with mmcv's own tensors and with contiguous
ones, each dense and with half the encoder's sampling points (``backbone+points``' part, no
backbone pruning), on a real KITTI frame::

    .venv/bin/python bench/deformable_sampling.py                # after make demo, ~1 min
    .venv/bin/python bench/deformable_sampling.py --full-size    # R50 at 1242x375, ~5 min

At demo size it times the trained baseline (``--checkpoint``): where the learnt offsets send
the samples changes ``grid_sample``'s memory access, so random weights time differently. The
full-size model has random (seeded) weights unless a checkpoint is given. Prints
each model's median and its speedup over mmcv's dense one with a paired-round 95 % interval,
and writes every run to JSON (``--out``). A measurement, not a gate: exit 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
from pathlib import Path

import torch
import torch.nn.functional

# The sibling bench's model loading: config.yaml (or configs/kitti.yaml) sizes, checkpoint or
# seeded random init. The script's folder is on sys.path when it runs.
from semi_structured import load_model, model_settings

from detrprune.evaluate.latency import speedup_interval
from detrprune.evaluate.metrics import cpu_description, time_test_steps
from detrprune.jobs import write_json
from detrprune.prune.attention import prune_sampling_points
from detrprune.train.model import ContiguousSamplingFunctional, inference_batch

REPO = Path(__file__).resolve().parent.parent
FRAME = REPO / "tests" / "data" / "kitti_sample" / "training" / "image_2" / "000001.png"
REFERENCE = "mmcv, dense"
DEMO_BASELINE = Path("results/baseline/model.pth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--full-size", action="store_true", help="the full study's R50 model at 1242x375")
    add(
        "--checkpoint",
        type=Path,
        help="weights (default: the demo's baseline; random at full size)",
    )
    add("--rounds", type=int, default=10, help="interleaved rounds")
    add("--runs", type=int, default=3, help="timed runs per model and round")
    add("--threads", type=int, default=2)
    add("--out", type=Path, help="JSON record (default results/bench/deformable_sampling*.json)")
    args = parser.parse_args()
    if min(args.rounds, args.runs, args.threads) < 1:
        parser.error("--rounds, --runs and --threads must be >= 1")
    out = args.out or Path(
        f"results/bench/deformable_sampling{'_full_size' if args.full_size else ''}.json"
    )
    import mmcv.ops.multi_scale_deform_attn as deform_attn

    checkpoint = args.checkpoint or (None if args.full_size else DEMO_BASELINE)
    if checkpoint is not None and not checkpoint.is_file():
        raise SystemExit(f"{checkpoint}: no such checkpoint (run make demo first, or --checkpoint)")
    torch.set_num_threads(args.threads)
    settings = model_settings(args.full_size)
    dense, weights = load_model(settings, checkpoint)  # built with the contiguous sampling
    fewer_points = copy.deepcopy(dense)
    prune_sampling_points(fewer_points, 0.5)
    batch = inference_batch([FRAME], tuple(settings["input_scale"]))
    functionals = {"mmcv": torch.nn.functional, "contiguous": ContiguousSamplingFunctional()}
    models = {"dense": dense, "half the encoder's points": fewer_points}
    cases = [(f, m) for f in functionals for m in models]
    runs: dict[str, list[list[float]]] = {f"{f}, {m}": [] for f, m in cases}

    def timed(functional: str, model: str, count: int) -> list[float]:
        deform_attn.F = functionals[functional]
        return time_test_steps(models[model], [batch], count)

    try:
        for functional, model in cases:
            timed(functional, model, 1)  # warm-up
        order = random.Random(0)
        for round_index in range(args.rounds):
            for functional, model in order.sample(cases, len(cases)):
                runs[f"{functional}, {model}"].append(timed(functional, model, args.runs))
            print(f"round {round_index + 1}/{args.rounds}", flush=True)
    finally:
        deform_attn.F = functionals["contiguous"]
    reference = statistics.median(t for r in runs[REFERENCE] for t in r)
    rows = []
    for name, rounds in runs.items():
        median = statistics.median(t for r in rounds for t in r)
        low, high = speedup_interval(runs[REFERENCE], rounds)
        rows.append(
            {
                "model": name,
                "median_ms": median,
                "speedup": reference / median,
                "speedup_ci95_low": low,
                "speedup_ci95_high": high,
            }
        )
    device = cpu_description(args.threads)
    size = "full size (R50, 1242x375)" if args.full_size else "demo size"
    print(f"\n{size}, {device}, {args.rounds} rounds x {args.runs} runs, speedup vs {REFERENCE}")
    for row in rows:
        print(
            f"{row['model']:40s} {row['median_ms']:9.1f} ms  {row['speedup']:.2f}x "
            f"[{row['speedup_ci95_low']:.2f}, {row['speedup_ci95_high']:.2f}]"
        )
    print(f"weights: {weights}")
    record = {"size": size, "device": device, "weights": weights, "rounds": args.rounds}
    record["runs_per_round"] = args.runs
    write_json({**record, "rows": rows, "runs_ms": runs}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
