"""A variant against its control of equal training (:mod:`detrprune.variants`), paired.

Both models are scored on the same bootstrap resamples of the validation images (same images,
same seed), so the interval of their mAP difference leaves out the image-to-image variation
they share. A change is called significant only when that interval excludes 0.

The evaluate rule keeps each variant's per-resample metrics in ``resamples.npz``
(:func:`write_resamples`); pairing two variants is then a subtraction, done for every row when
the summary is aggregated, instead of a second pycocotools matching of both models' detections.
The file also records the seed and the validation image ids, so two files are paired only when
they were drawn from the same resamples.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detrprune.evaluate.bootstrap import METRICS
from detrprune.evaluate.intervals import paired_delta
from detrprune.jobs import atomic_output

log = logging.getLogger(__name__)


class PairingError(ValueError):
    """A resamples file that is unreadable, or two that were not drawn from the same resamples."""


@dataclass(frozen=True)
class Resamples:
    """One variant's metrics on each bootstrap resample (what ``resamples.npz`` holds)."""

    variant: str
    seed: int
    image_ids: np.ndarray
    samples: Mapping[str, np.ndarray]

    @property
    def count(self) -> int:
        return int(next(iter(self.samples.values())).size)


def write_resamples(
    path: Path,
    variant: str,
    samples: Mapping[str, np.ndarray],
    *,
    seed: int,
    image_ids: Sequence[int],
) -> None:
    """Save ``samples`` (:func:`~detrprune.evaluate.bootstrap.bootstrap_accuracy`) atomically,
    with what identifies the resamples: the seed and the sorted validation image ids."""
    arrays = {name: np.asarray(samples[name], dtype=np.float64) for name in METRICS}
    with atomic_output(Path(path)) as (tmp,), tmp.open("wb") as handle:
        np.savez(
            handle,
            variant=np.asarray(variant),
            seed=np.asarray(seed, dtype=np.int64),
            image_ids=np.sort(np.asarray(image_ids, dtype=np.int64)),
            **arrays,
        )


def read_resamples(path: Path) -> Resamples:
    """Load a file of :func:`write_resamples` (no pickle); a bad file raises a PairingError."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            missing = [k for k in ("variant", "seed", "image_ids", *METRICS) if k not in data]
            if missing:
                raise PairingError(f"{path}: missing array(s) {missing}")
            samples = {name: np.asarray(data[name], dtype=np.float64) for name in METRICS}
            resamples = Resamples(
                variant=str(data["variant"]),
                seed=int(data["seed"]),
                image_ids=np.asarray(data["image_ids"]),
                samples=samples,
            )
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, PairingError):
            raise
        raise PairingError(f"{path}: cannot read the bootstrap resamples ({exc})") from exc
    shapes = {name: values.shape for name, values in resamples.samples.items()}
    if len(set(shapes.values())) != 1 or any(len(s) != 1 or s[0] == 0 for s in shapes.values()):
        raise PairingError(
            f"{path}: per-resample arrays must be non-empty, 1-D and of one length, got {shapes}"
        )
    return resamples


def compare_with_control(
    variant: Resamples,
    control: Resamples,
    variant_map: float,
    control_map: float,
) -> dict[str, Any]:
    """``delta_mAP`` (variant - control) with its paired 95 % interval, and whether it excludes 0.

    ``variant_map`` and ``control_map`` are the full-set mAPs (the point estimate); the
    interval comes from the per-resample differences.

    Raises:
        PairingError: the two were not drawn from the same resamples (seed, count or images).
    """
    if variant.seed != control.seed or variant.count != control.count:
        raise PairingError(
            f"{variant.variant} and its control {control.variant} were resampled differently: "
            f"seed {variant.seed} vs {control.seed}, {variant.count} vs {control.count} resamples"
        )
    if not np.array_equal(variant.image_ids, control.image_ids):
        raise PairingError(
            f"{variant.variant} and its control {control.variant} were evaluated on different "
            f"validation images ({variant.image_ids.size} vs {control.image_ids.size} ids)"
        )
    delta = paired_delta(variant.samples, control.samples, variant_map, control_map)
    low, high = delta["delta_mAP_ci95_low"], delta["delta_mAP_ci95_high"]
    log.info(
        "%s - %s: mAP %+.4f, 95 %% interval [%+.4f, %+.4f] over %d paired resamples",
        variant.variant,
        control.variant,
        delta["delta_mAP"],
        low,
        high,
        variant.count,
    )
    return {**delta, "significant": bool(low > 0 or high < 0)}
