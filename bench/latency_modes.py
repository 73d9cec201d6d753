"""Does the evaluate rule's CPU latency (the accuracy pass's own calls) read like back-to-back runs?

Run after the workflow (``make demo``)::

    .venv/bin/python bench/latency_modes.py                      # baseline, prune/filter/r50
    .venv/bin/python bench/latency_modes.py --variants baseline finetune/filter/r50 --rounds 5

``evaluate`` times the ``test_step`` calls of its COCO pass, one per validation image with the
loader decoding the next image in between; ``bench/pruning_goals.py --retime`` times back-to-back
calls on a few preloaded images. This times each model both ways, alternated in one process
(:func:`detrprune.evaluate.retime.latency_modes`), prints the medians with their 95 % intervals
and the ratio accuracy pass / back-to-back, and writes it all as JSON (``--out``). A ratio whose
interval holds 1 says the two ways agree on this machine. A measurement, not a gate: exit 0
whatever the numbers, non-zero with a one-line error when a model or the data is missing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from detrprune.constants import CLASSES
from detrprune.evaluate.goals import SummaryError
from detrprune.evaluate.metrics import cpu_description
from detrprune.evaluate.retime import latency_modes
from detrprune.jobs import write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--variants", nargs="+", default=["baseline", "prune/filter/r50"], help="models timed")
    add("--results", type=Path, default=Path("results"), help="folder of <variant>/model.pth")
    add("--config", type=Path, default=Path("config.yaml"), help="workflow config")
    add("--val-json", type=Path, default=Path("data/coco/val.json"), help="COCO json of val")
    add("--data-root", type=Path, default=Path("data/kitti"), help="folder of training/image_2")
    add("--rounds", type=int, default=3, help="rounds, each timing both ways")
    add("--runs", type=int, help="timed runs per way and round; none: evaluate.latency.runs")
    add("--warmup", type=int, help="calls dropped/untimed first; none: evaluate.latency.warmup")
    add("--threads", type=int, help="torch threads; none: the config's evaluate.threads")
    add("--images", type=int, default=5, help="images of the back-to-back runs")
    add("--out", type=Path, default=Path("results/bench/latency_modes.json"), help="JSON record")
    args = parser.parse_args(argv)
    try:
        config = yaml.safe_load(args.config.read_text())
        evaluate = config["evaluate"]
        models = {variant: args.results / variant / "model.pth" for variant in args.variants}
        for path in [*models.values(), args.val_json, args.data_root]:
            if not path.exists():
                raise SummaryError(f"{path}: no such file or folder")
        settings = {
            "input_scale": tuple(int(v) for v in config["model"]["input_scale"]),
            "threads": args.threads or int(evaluate["threads"]),
            "rounds": args.rounds,
            "runs": args.runs or int(evaluate["latency"]["runs"]),
            "warmup": int(evaluate["latency"]["warmup"]) if args.warmup is None else args.warmup,
            "images": args.images,
        }
        timings = latency_modes(
            models, val_json=args.val_json, data_root=args.data_root, classes=CLASSES, **settings
        )
    except (OSError, KeyError, TypeError, yaml.YAMLError, SummaryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{'model':<28} {'accuracy pass ms':>24} {'back-to-back ms':>24} {'ratio':>20}")
    for name, entry in timings.items():
        cells = [
            f"{e['latency_ms_median']:.1f} [{e['latency_ms_ci95_low']:.1f}, "
            f"{e['latency_ms_ci95_high']:.1f}]"
            for e in (entry["accuracy_pass"], entry["back_to_back"])
        ]
        ratio = (
            f"{entry['ratio']:.3f} [{entry['ratio_ci95_low']:.3f}, {entry['ratio_ci95_high']:.3f}]"
        )
        print(f"{name:<28} {cells[0]:>24} {cells[1]:>24} {ratio:>20}")
    record = {
        **settings,
        "input_scale": list(settings["input_scale"]),
        "latency_device": cpu_description(settings["threads"]),
        "models": timings,
    }
    write_json(record, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
