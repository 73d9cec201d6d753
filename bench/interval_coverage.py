"""Coverage of the bootstrap intervals of mAP, mAP50 and KITTI moderate mAP (issue #36).

Simulates (:mod:`detrprune.evaluate.coverage`) validation sets drawn from a synthetic
population whose metrics are known exactly (:mod:`detrprune.evaluate.synthetic`) and counts how
often the percentile, basic and BCa intervals hold the population value, for a weak and a better
detector and for the paired difference of the better one and a degraded copy::

    .venv/bin/python bench/interval_coverage.py                        # full size, ~15 min
    .venv/bin/python bench/interval_coverage.py --draws 20 --resamples 200 --population 1000

Prints a Markdown table per scene density and the methods the coverage supports, and writes
everything, with the command, date, machine and git HEAD, to JSON (``--out``) and the tables
with that provenance to Markdown (``--md``). A measurement, not a gate: exit 0 whatever the
numbers.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from detrprune.evaluate.coverage import DENSE_OBJECTS, SAMPLE_SIZE, coverage_study, coverage_table
from detrprune.evaluate.metrics import cpu_description
from detrprune.evaluate.synthetic import MAX_OBJECTS
from detrprune.jobs import git_commit, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--population", type=int, default=5000, help="synthetic frames in the population")
    add("--draws", type=int, default=250, help="validation sets drawn from it")
    add("--resamples", type=int, default=1000, help="bootstrap resamples per validation set")
    add("--sample-size", type=int, default=SAMPLE_SIZE, help="frames per validation set")
    add(
        "--scenes",
        type=int,
        nargs="+",
        default=[MAX_OBJECTS, DENSE_OBJECTS],
        help="max objects per frame, one simulation each",
    )
    add("--seed", type=int, default=0, help="seed of the population, draws and resamples")
    add("--out", type=Path, default=Path("bench/interval_coverage.json"), help="JSON record")
    add("--md", type=Path, default=Path("bench/interval_coverage.md"), help="Markdown tables")
    args = parser.parse_args(argv)
    if min(args.draws, args.resamples, args.sample_size) < 1 or min(args.scenes) < 0:
        parser.error("--draws/--resamples/--sample-size must be >= 1, --scenes >= 0")
    if args.sample_size > args.population:
        parser.error("--sample-size must not exceed --population")
    start = time.monotonic()
    study = coverage_study(
        population_size=args.population,
        draws=args.draws,
        resamples=args.resamples,
        seed=args.seed,
        scenes=args.scenes,
        sample_size=args.sample_size,
    )
    elapsed = time.monotonic() - start
    study["provenance"] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "machine": cpu_description(len(os.sched_getaffinity(0))),
        "git_commit": git_commit(),
    }
    table = coverage_table(study)
    print(table)
    write_json(study, args.out)
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(markdown(study, table))
    print(f"\n{elapsed:.0f} s; wrote {args.out} and {args.md}")
    return 0


def markdown(study: dict, table: str) -> str:
    """The tables under a header that says what was simulated, how, where and when."""
    s, p = study["settings"], study["provenance"]
    return (
        "# Coverage of the bootstrap intervals of mAP, mAP50 and KITTI moderate mAP\n\n"
        f"Population of {s['population']} synthetic frames per scene density; {s['draws']} "
        f"validation sets of {s['sample_size']} frames drawn from it, each bootstrapped "
        f"{s['resamples']} times; {100 * s['level']:.0f} % intervals. Coverage = share of draws "
        "whose interval holds the population value; point bias = mean full-set value of a draw "
        "minus the population value; boot shift = mean of the resamples minus the full-set "
        "value. How the detectors behave: `detrprune/evaluate/synthetic.py`; how the choice is "
        "made: `detrprune/evaluate/coverage.py`.\n\n"
        f"`{p['command']}`, {p['date']}, {p['machine']}, {p['elapsed_s']:.0f} s, "
        f"commit {p['git_commit']}.\n\n"
        f"{table}\n"
    )


if __name__ == "__main__":
    sys.exit(main())
