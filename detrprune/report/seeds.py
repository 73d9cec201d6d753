"""Training-seed replicates of the fine-tuned models (``pruning.finetune.replicate_seeds``).

A fine-tuned model's paired bootstrap interval (``delta_mAP_ci95_*``) covers the choice of
validation images, not the fine-tuning's own randomness (data order, dropout). On the demo that
randomness moves one model's mAP by about as much as the image interval is wide (README,
"training seeds"), so a single-seed comparison can look significant by luck. Each replicate seed
fine-tunes every pruned target and its control again; differences taken within a seed
(variant - control, the same data order for both) are averaged over the seeds with a Student t
interval: the uncertainty of the comparison across training runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

# A row's own training run counts as one of its seeds; the columns exist only for rows with at
# least one replicate (so at least two seeds).
SEED_COLUMNS = (
    "seeds",
    "mAP_seed_mean",
    "mAP_seed_sd",
    "delta_mAP_seed_mean",
    "delta_mAP_seed_ci95_low",
    "delta_mAP_seed_ci95_high",
    "map_kept_seed_mean",
)


class ReplicateError(ValueError):
    """Replicates that cannot be paired with their variant or their control."""


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values`` and its two-sided Student t interval at ``level`` (n - 1 degrees of
    freedom); needs at least two values."""
    sample = np.asarray(values, dtype=float)
    if sample.size < 2:
        raise ReplicateError(f"a t interval needs at least two values, got {sample.size}")
    mean = float(sample.mean())
    low, high = stats.t.interval(level, sample.size - 1, loc=mean, scale=stats.sem(sample))
    return mean, float(low), float(high)


def add_seed_replicates(
    rows: Sequence[dict[str, Any]], replicates: Mapping[str, Mapping[int, float]]
) -> None:
    """Add :data:`SEED_COLUMNS` to each row that has replicates.

    Args:
        rows: summary rows, each with ``variant``, ``control`` ("" for none) and ``mAP`` (the
            run with the study's own seed).
        replicates: replicated variant -> {replicate seed: mAP}.

    A row's control is taken at the same seed when the control is replicated too (the baseline
    is trained once, so a control that is the baseline has one value for every seed).

    Raises:
        ReplicateError: a replicate of a variant that is not a row, or a replicated control
            missing a seed its variant has.
    """
    maps = {row["variant"]: row["mAP"] for row in rows}
    for variant in replicates:
        if variant not in maps:
            raise ReplicateError(
                f"replicates of {variant!r}, which has no metrics among the inputs"
            )
    for row in rows:
        seeds = replicates.get(row["variant"])
        if not seeds:
            continue
        own = [row["mAP"], *(seeds[seed] for seed in sorted(seeds))]
        control = row["control"]
        deltas = [math.nan] * len(own)
        kept = math.nan
        if control in maps:
            control_seeds = replicates.get(control)
            if control_seeds is not None and set(seeds) - set(control_seeds):
                raise ReplicateError(
                    f"{row['variant']} has seed replicates {sorted(seeds)}, its control "
                    f"{control} only {sorted(control_seeds)}"
                )
            control_maps = [
                maps[control],
                *(
                    control_seeds[seed] if control_seeds is not None else maps[control]
                    for seed in sorted(seeds)
                ),
            ]
            deltas = [mine - theirs for mine, theirs in zip(own, control_maps, strict=True)]
            control_mean = float(np.mean(control_maps))
            kept = float(np.mean(own)) / control_mean if control_mean > 0 else math.nan
        delta_mean, low, high = t_interval(deltas)
        row.update(
            seeds=len(own),
            mAP_seed_mean=float(np.mean(own)),
            mAP_seed_sd=float(np.std(own, ddof=1)),
            delta_mAP_seed_mean=delta_mean,
            delta_mAP_seed_ci95_low=low,
            delta_mAP_seed_ci95_high=high,
            map_kept_seed_mean=kept,
        )
