"""Full-size GMACs by model part: the baseline and each filter scope at one ratio.

The full study's model (config.yaml overridden by configs/kitti.yaml: Deformable DETR R50,
two-stage refine, 6+6 layers) at its KITTI input, counted by the workflow's own fvcore path on a
real KITTI frame. Weights are random: which channels L1 pruning keeps depends on them, how many
it keeps (and so the MACs) does not. No training, no dataset needed::

    .venv/bin/python bench/full_size_gmacs.py            # ratio 50, ~2 min on 2 cores
    .venv/bin/python bench/full_size_gmacs.py --ratio 30 --out results/bench/gmacs_r30.json

Prints a table (GMACs per part) and writes it as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import pandas as pd
import torch
import yaml

from detrprune.constants import FILTER_SCOPES, GMACS_PARTS
from detrprune.evaluate.metrics import fvcore_gmacs
from detrprune.jobs import write_json
from detrprune.prune.counting import count_parameters
from detrprune.prune.filters import filter_prune
from detrprune.train.model import build_detector, inference_batch, model_config

REPO = Path(__file__).resolve().parent.parent
FRAME = REPO / "tests" / "data" / "kitti_sample" / "training" / "image_2" / "000001.png"
PARTS = list(GMACS_PARTS)


def full_model_settings() -> dict:
    """``model`` of config.yaml with configs/kitti.yaml's values over it (as --configfile)."""
    model = yaml.safe_load((REPO / "config.yaml").read_text())["model"]
    model.update(yaml.safe_load((REPO / "configs" / "kitti.yaml").read_text())["model"])
    return model


def gmacs_table(ratio: float, frame: Path = FRAME) -> pd.DataFrame:
    """One row per model (baseline, then each filter scope at ``ratio``): GMACs total and per
    part, parameters (millions)."""
    settings = full_model_settings()
    width, height = settings["input_scale"]
    torch.manual_seed(0)
    baseline = build_detector(model_config(settings))
    baseline.init_weights()
    baseline.eval()
    batch = inference_batch([frame], (width, height))
    rows = []
    for scope in ("none", *FILTER_SCOPES):
        model = copy.deepcopy(baseline)
        if scope != "none":
            filter_prune(model, ratio, (height, width), scope)
        counted = fvcore_gmacs(model, [batch])
        rows.append(
            {
                "scope": scope,
                "gmacs": counted["gmacs"],
                **{part: counted[f"gmacs_{part}"] for part in PARTS},
                "params_m": count_parameters(model) / 1e6,
            }
        )
    return pd.DataFrame(rows).set_index("scope")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ratio", type=int, default=50, help="filter ratio in percent")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/bench/full_size_gmacs.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    table = gmacs_table(args.ratio / 100)
    print(f"GMACs by part at {full_model_settings()['input_scale']}, filter ratio {args.ratio} %")
    print(table.round(2).to_string())
    write_json({"ratio": args.ratio, "rows": table.reset_index().to_dict("records")}, args.out)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
