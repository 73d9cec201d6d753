"""A variant against its control on the same resamples (detrprune.evaluate.paired)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detrprune.evaluate.bootstrap import (
    METRICS,
    bootstrap_accuracy,
    coco_resampled,
    resample_indices,
)
from detrprune.evaluate.intervals import paired_delta
from detrprune.evaluate.paired import (
    PairingError,
    compare_with_control,
    read_resamples,
    write_resamples,
)

from .test_bootstrap import pycoco_stats, random_case


def saved(tmp_path: Path, variant: str, gt, dets, *, resamples: int, seed: int):
    """What the evaluate rule keeps of one variant: its resamples, written and read back."""
    path = tmp_path / f"{variant.replace('/', '_')}.npz"
    samples = bootstrap_accuracy(gt, dets, resamples=resamples, seed=seed)
    write_resamples(path, variant, samples, seed=seed, image_ids=[i["id"] for i in gt["images"]])
    return read_resamples(path)


def test_a_model_against_itself_differs_by_exactly_zero_and_is_not_significant(tmp_path):
    gt, dets = random_case(3, num_images=20)
    point = float(pycoco_stats(gt, dets)[0])
    a = saved(tmp_path, "a", gt, dets, resamples=200, seed=0)
    b = saved(tmp_path, "b", gt, dets, resamples=200, seed=0)
    same = compare_with_control(a, b, point, point)
    assert (same["delta_mAP"], same["delta_mAP_ci95_low"], same["delta_mAP_ci95_high"]) == (
        0.0,
        0.0,
        0.0,
    )
    assert same["significant"] is False


def test_losing_most_detections_is_a_significant_drop_equal_to_rescoring_both(tmp_path):
    gt, dets = random_case(4, num_images=40)
    kept = dets[::4]  # three detections in four gone: far fewer true positives
    variant_map, control_map = (float(pycoco_stats(gt, d)[0]) for d in (kept, dets))
    result = compare_with_control(
        saved(tmp_path, "prune/x/r90", gt, kept, resamples=300, seed=1),
        saved(tmp_path, "baseline", gt, dets, resamples=300, seed=1),
        variant_map,
        control_map,
    )
    assert result["delta_mAP"] < 0
    assert result["delta_mAP_ci95_low"] <= result["delta_mAP"] <= result["delta_mAP_ci95_high"]
    assert result["delta_mAP_ci95_high"] < 0 and result["significant"] is True
    # The saved arrays give exactly what scoring both detection sets on the resamples gives.
    indices = resample_indices(len(gt["images"]), 300, 1)
    rescored = paired_delta(
        coco_resampled(gt, kept, indices),
        coco_resampled(gt, dets, indices),
        variant_map,
        control_map,
    )
    assert {k: result[k] for k in rescored} == rescored


def test_resamples_round_trip_bit_exact_without_pickle(tmp_path):
    gt, dets = random_case(5, num_images=15)
    samples = bootstrap_accuracy(gt, dets, resamples=200, seed=7)
    path = tmp_path / "resamples.npz"
    write_resamples(path, "finetune/filter/r50", samples, seed=7, image_ids=[57, 3, 12])
    back = read_resamples(path)
    assert (back.variant, back.seed, back.count) == ("finetune/filter/r50", 7, 200)
    assert back.image_ids.tolist() == [3, 12, 57]
    for name, values in samples.items():
        np.testing.assert_array_equal(back.samples[name], values)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 2}, "resampled differently"),
        ({"resamples": 250}, "resampled differently"),
        ({"image_ids": [1, 2, 4]}, "different validation images"),
    ],
)
def test_resamples_drawn_differently_are_not_paired(tmp_path, change, message):
    samples = {name: np.linspace(0, 1, 200) for name in ("mAP", "mAP50", "kitti_mAP_moderate")}
    settings = {"seed": 1, "resamples": 200, "image_ids": [1, 2, 3], **change}
    other = {name: np.linspace(0, 1, settings["resamples"]) for name in samples}
    write_resamples(tmp_path / "a.npz", "a", samples, seed=1, image_ids=[1, 2, 3])
    write_resamples(
        tmp_path / "b.npz", "b", other, seed=settings["seed"], image_ids=settings["image_ids"]
    )
    with pytest.raises(PairingError, match=message):
        compare_with_control(
            read_resamples(tmp_path / "a.npz"), read_resamples(tmp_path / "b.npz"), 0.5, 0.5
        )


def test_an_unreadable_resamples_file_is_named(tmp_path):
    path = tmp_path / "resamples.npz"
    path.write_bytes(b"not an npz")
    with pytest.raises(PairingError, match=r"resamples\.npz: cannot read"):
        read_resamples(path)
    np.savez(path, variant=np.asarray("a"), seed=np.asarray(1))
    with pytest.raises(PairingError, match=r"resamples\.npz: missing array"):
        read_resamples(path)


@pytest.mark.parametrize(
    "shapes",
    [{"mAP": (4, 2), "mAP50": (4, 2), "kitti_mAP_moderate": (4, 2)}, {"mAP": ()}, {"mAP": (0,)}],
    ids=["2-D", "scalar", "empty"],
)
def test_per_resample_arrays_that_are_not_one_non_empty_row_are_refused(tmp_path, shapes):
    arrays = {name: np.zeros(shapes.get(name, shapes["mAP"])) for name in METRICS}
    path = tmp_path / "resamples.npz"
    np.savez(path, variant=np.asarray("a"), seed=np.asarray(1), image_ids=np.arange(3), **arrays)
    with pytest.raises(PairingError, match=r"resamples\.npz: per-resample arrays must be"):
        read_resamples(path)
