"""A variant against its control of equal training (:mod:`detrprune.variants`), paired.

Both models are scored on the same bootstrap resamples of the validation images (same images,
same seed), so the interval of their mAP difference leaves out the image-to-image variation
they share. A change is called significant only when that interval excludes 0.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from detrprune.evaluate.bootstrap import coco_resampled, paired_delta, resample_indices

log = logging.getLogger(__name__)


def compare_with_control(
    coco_gt: Mapping[str, Any],
    variant: Mapping[str, Any],
    control: Mapping[str, Any],
    variant_detections: Sequence[Mapping[str, Any]],
    control_detections: Sequence[Mapping[str, Any]],
    *,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """``delta_mAP`` (variant - control) with its paired 95 % interval, and whether it excludes 0.

    ``variant`` and ``control`` are the two ``metrics.json`` records; their full-set mAP is the
    point estimate, their detections give the per-resample mAP.
    """
    indices = resample_indices(len(coco_gt["images"]), resamples, seed)
    delta = paired_delta(
        coco_resampled(coco_gt, variant_detections, indices),
        coco_resampled(coco_gt, control_detections, indices),
        variant["mAP"],
        control["mAP"],
    )
    low, high = delta["delta_mAP_ci95_low"], delta["delta_mAP_ci95_high"]
    log.info(
        "%s - %s: mAP %+.4f, 95 %% interval [%+.4f, %+.4f] over %d paired resamples",
        variant["variant"],
        control["variant"],
        delta["delta_mAP"],
        low,
        high,
        resamples,
    )
    return {
        "variant": variant["variant"],
        "control": control["variant"],
        **delta,
        "significant": bool(low > 0 or high < 0),
        "resamples": resamples,
    }


def compare_files(
    val_json: Path,
    metrics: Path,
    detections: Path,
    control_metrics: Path,
    control_detections: Path,
    *,
    resamples: int,
    seed: int,
) -> dict[str, Any]:
    """:func:`compare_with_control` on the files the evaluate rule writes."""

    def read(path: Path) -> Any:
        return json.loads(Path(path).read_text())

    return compare_with_control(
        read(val_json),
        read(metrics),
        read(control_metrics),
        read(detections),
        read(control_detections),
        resamples=resamples,
        seed=seed,
    )
