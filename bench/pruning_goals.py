"""Check the pruning study's measured goals against ``results/summary.csv``.

Run after the workflow (``make demo``)::

    .venv/bin/python bench/pruning_goals.py                 # summary numbers only
    .venv/bin/python bench/pruning_goals.py --retime        # plus an interleaved re-timing

It prints one table row per variant (with each filter variant's latency elasticity: latency
drop / GMACs drop) and a verdict per goal (``met``, ``not met`` or ``not measured``), explains
goal e's best candidate and every failed latency check by model part, and writes every number
and verdict to a JSON file (``--out``). With ``--retime``, goal e is judged on the re-timed
latency. The goals and their thresholds are ``bench/goals.py``, the tables and the record
``bench/goals_report.py``, the numbers they judge :mod:`detrprune.evaluate.analysis`;
``--retime`` is :mod:`detrprune.evaluate.retime`.
Verdicts are measurements, not assertions: the exit status is 0 whatever they are, and non-zero
(with a one-line error) only when the summary cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

# The sibling modules' goals and report. The script's folder is on sys.path when it runs.
from goals_report import check_goals

from detrprune.evaluate.analysis import SummaryError, read_summary
from detrprune.evaluate.retime import RetimeSettings, retime_summary
from detrprune.jobs import write_json

DEFAULTS = RetimeSettings()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--summary", type=Path, default=Path("results/summary.csv"), help="summary CSV")
    add("--results", type=Path, default=DEFAULTS.results, help="folder of <variant>/model.pth")
    add(
        "--out",
        type=Path,
        default=Path("results/bench/pruning_goals.json"),
        help="JSON record written here",
    )
    add = parser.add_argument_group("re-timing").add_argument
    add("--retime", action="store_true", help="re-time baseline and variants in one process")
    add(
        "--retime-kinds",
        nargs="+",
        default=list(DEFAULTS.kinds),
        help="kinds re-timed besides the baseline ('all': every row)",
    )
    add("--config", type=Path, default=DEFAULTS.config, help="workflow config (input scale)")
    add("--input-scale", type=int, nargs=2, metavar=("W", "H"), help="overrides the config's")
    add("--threads", type=int, help="torch threads; none: the config's evaluate.threads")
    add("--runs", type=int, default=DEFAULTS.runs, help="timed runs per model")
    add("--rounds", type=int, default=DEFAULTS.rounds, help="round-robin rounds")
    add("--warmup", type=int, default=DEFAULTS.warmup, help="untimed runs per model at the start")
    add(
        "--switch-warmup",
        type=int,
        default=DEFAULTS.switch_warmup,
        help="untimed runs each time a model comes up",
    )
    add("--images", type=int, default=DEFAULTS.images, help="val images cycled")
    add("--val-json", type=Path, default=DEFAULTS.val_json, help="COCO json of the val split")
    add(
        "--data-root", type=Path, default=DEFAULTS.data_root, help="folder holding training/image_2"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for option in ("runs", "rounds", "images"):
        if getattr(args, option) < 1:
            parser.error(f"--{option} must be >= 1")
    if args.warmup < 0 or args.switch_warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error("--warmup/--switch-warmup must be >= 0 and --threads >= 1")
    try:
        summary = read_summary(args.summary)
        retimed = None
        if args.retime:
            settings = RetimeSettings(
                results=args.results,
                config=args.config,
                input_scale=tuple(args.input_scale) if args.input_scale else None,
                threads=args.threads,
                kinds=tuple(args.retime_kinds),
                runs=args.runs,
                rounds=args.rounds,
                warmup=args.warmup,
                switch_warmup=args.switch_warmup,
                images=args.images,
                val_json=args.val_json,
                data_root=args.data_root,
            )
            retimed = retime_summary(summary, settings)
    except SummaryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    check = check_goals(args.summary, summary, retimed)
    print(check.report())
    write_json(check.record(), args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
