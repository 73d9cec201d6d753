"""Bootstrap intervals over validation images (detrprune.evaluate.bootstrap and .intervals).

The reference for a resample is the dataset it stands for: each drawn image copied as many
times as drawn, with new image and annotation ids, evaluated from scratch by pycocotools
(evaluate + accumulate + summarize) and by ``kitti_ap``.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from detrprune.evaluate.bootstrap import (
    METRICS,
    BootstrapError,
    bootstrap_accuracy,
    coco_evaluated,
    coco_resampled,
    kitti_resampled,
    resample_indices,
    resampled_accuracy,
)
from detrprune.evaluate.intervals import (
    DELTA_INTERVAL_METHOD,
    INTERVAL_METHOD,
    accuracy_intervals,
    basic_ci,
    bca_acceleration,
    bca_ci,
    bootstrap_interval,
    median_ci,
    paired_delta,
    percentile_ci,
)
from detrprune.evaluate.kitti_ap import CLASSES, kitti_ap

from .test_kitti_ap import IGNORE_AS, Scene


def coco_of(scene: Scene) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The scene's ground truth, with the annotation ids pycocotools needs, and detections."""
    gt = scene.coco()
    gt["annotations"] = [{**a, "id": n} for n, a in enumerate(gt["annotations"], start=1)]
    return gt, scene.detections


def random_case(
    seed: int, num_images: int = 30, ties: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Random frames with every KITTI type, jittered and mislabelled detections and false
    positives; image ids are neither contiguous nor listed in order. ``ties`` rounds scores
    to one decimal, so that many tie, also within an image."""
    rng = np.random.default_rng(seed)
    scene = Scene()
    ids = (rng.permutation(num_images) * 3 + 7).tolist()
    scene.images = [{"id": i, "width": 1242, "height": 375} for i in ids]
    types = ["Car"] * 4 + ["Pedestrian"] * 3 + ["Cyclist"] * 2 + ["Van", "Person_sitting"]

    def detect(image_id: int, cls: str, bbox: list[float]) -> None:
        score = float(rng.random())
        scene.det(cls, bbox, round(score, 1) if ties else score, image_id=image_id)

    for image_id in ids:
        for _ in range(int(rng.integers(0, 8))):
            kitti_type = types[int(rng.integers(len(types)))] if rng.random() > 0.05 else "DontCare"
            x, y = float(rng.uniform(0, 1100)), float(rng.uniform(0, 300))
            w, h = float(rng.uniform(10, 140)), float(rng.uniform(15, 90))
            scene.gt(
                kitti_type,
                [x, y, w, h],
                truncated=float(rng.choice([0.0, 0.0, 0.1, 0.2, 0.4, 0.6])),
                occluded=int(rng.choice([0, 0, 0, 1, 2, 3])),
                image_id=image_id,
            )
            for _ in range(int(rng.integers(0, 3))):
                same = rng.random() < 0.8 and kitti_type != "DontCare"
                cls = IGNORE_AS.get(kitti_type, kitti_type) if same else CLASSES[rng.integers(3)]
                box = [x + rng.normal(0, 3), y + rng.normal(0, 3), w * rng.uniform(0.8, 1.2), h]
                detect(image_id, cls, [float(v) for v in box])
        for _ in range(int(rng.integers(0, 5))):
            box = rng.uniform([0, 0, 8, 8], [1100, 300, 120, 90]).tolist()
            detect(image_id, CLASSES[rng.integers(3)], box)
    return coco_of(scene)


def expanded(
    gt: dict[str, Any], dets: list[dict[str, Any]], row: np.ndarray
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The dataset a resample stands for: the drawn images in sorted order, each copy with a
    new image id (so copies follow each other) and its annotations with new ids."""
    ids = sorted(image["id"] for image in gt["images"])
    images = {image["id"]: image for image in gt["images"]}
    out = {"images": [], "annotations": [], "categories": gt["categories"]}
    out_dets = []
    for new_id, position in enumerate(sorted(row.tolist()), start=1):
        old_id = ids[position]
        out["images"].append({**images[old_id], "id": new_id})
        for ann in gt["annotations"]:
            if ann["image_id"] == old_id:
                out["annotations"].append(
                    {**ann, "id": len(out["annotations"]) + 1, "image_id": new_id}
                )
        out_dets.extend({**d, "image_id": new_id} for d in dets if d["image_id"] == old_id)
    return out, out_dets


def pycoco_stats(gt: dict[str, Any], dets: list[dict[str, Any]]) -> np.ndarray:
    evaluator = coco_evaluated(gt, dets)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def assert_matches_reference(gt, dets, indices: np.ndarray) -> None:
    coco = coco_resampled(gt, dets, indices)
    kitti = kitti_resampled(gt, dets, indices)
    for r, row in enumerate(indices):
        ref_gt, ref_dets = expanded(gt, dets, row)
        stats = pycoco_stats(ref_gt, ref_dets)
        assert coco["mAP"][r] == stats[0]
        assert coco["mAP50"][r] == stats[1]
        assert kitti[r] == kitti_ap(ref_gt, ref_dets)["kitti_mAP_moderate"]


def test_resample_indices_are_seeded():
    a = resample_indices(50, 200, seed=3)
    assert a.shape == (200, 50) and a.min() >= 0 and a.max() < 50
    np.testing.assert_array_equal(a, resample_indices(50, 200, seed=3))
    assert not np.array_equal(a, resample_indices(50, 200, seed=4))


@pytest.mark.parametrize("resamples", [0, -5])
def test_fewer_than_one_resample_is_rejected(resamples):
    gt, dets = random_case(0, num_images=4)
    with pytest.raises(BootstrapError, match="resamples"):
        resample_indices(4, resamples, seed=0)
    with pytest.raises(BootstrapError, match="resamples"):
        bootstrap_accuracy(gt, dets, resamples=resamples, seed=0)
    with pytest.raises(BootstrapError, match="resamples"):
        median_ci([1.0, 2.0], resamples=resamples)


def test_perfect_detector_gives_one():
    """Five easy objects per class in each of ten images: every resample holds 50 per class,
    enough for KITTI's 41 recall samples, and each is detected exactly."""
    scene = Scene(num_images=10)
    for image_id in range(10):
        for row, cls in enumerate(CLASSES):
            for k in range(5):
                box = [100.0 * k, 100.0 * row, 60.0, 50.0]
                scene.gt(cls, box, image_id=image_id)
                scene.det(cls, box, 0.95 - 0.01 * (5 * image_id + k), image_id=image_id)
    gt, dets = coco_of(scene)
    samples = bootstrap_accuracy(gt, dets, resamples=200, seed=0)
    jackknife = resampled_accuracy(gt, dets, resamples=1)
    for name in ("mAP", "mAP50", "kitti_mAP_moderate"):
        assert samples[name].shape == (200,)
        assert (samples[name] == 1.0).all()
        assert jackknife.point[name] == 1.0 and (jackknife.jackknife[name] == 1.0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # constant samples and jackknife: no 0/0 anywhere
        intervals = accuracy_intervals(samples, jackknife.point, jackknife.jackknife)
    assert intervals == {
        f"{name}_ci95_{side}": 1.0
        for name in ("mAP", "mAP50", "kitti_mAP_moderate")
        for side in ("low", "high")
    }


@pytest.mark.parametrize("ties", [False, True])
def test_full_set_equals_pycocotools_and_kitti_ap(ties):
    gt, dets = random_case(1, ties=ties)
    identity = np.arange(len(gt["images"]))[None, :]
    coco = coco_resampled(gt, dets, identity)
    stats = pycoco_stats(gt, dets)
    assert 0.0 < stats[0] < stats[1] < 1.0
    assert coco["mAP"][0] == stats[0]
    assert coco["mAP50"][0] == stats[1]
    assert kitti_resampled(gt, dets, identity)[0] == kitti_ap(gt, dets)["kitti_mAP_moderate"]


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("repeated", [0, 5, 17])
def test_one_image_repeated_equals_dataset_with_it_duplicated(ties, repeated):
    gt, dets = random_case(2, ties=ties)
    row = np.append(np.arange(len(gt["images"])), repeated)
    assert_matches_reference(gt, dets, row[None, :])


@pytest.mark.parametrize("ties", [False, True])
def test_random_resamples_equal_their_datasets(ties):
    gt, dets = random_case(3, num_images=20, ties=ties)
    assert_matches_reference(gt, dets, resample_indices(20, 4, seed=11))


def test_resample_without_ground_truth_is_nan():
    scene = Scene(num_images=2)
    scene.gt("Car", [0.0, 0.0, 50.0, 50.0], image_id=1)
    scene.det("Car", [0.0, 0.0, 9.0, 9.0], 0.5, image_id=0)
    gt, dets = coco_of(scene)
    indices = np.array([[0, 0], [0, 1]])
    coco = coco_resampled(gt, dets, indices)
    kitti = kitti_resampled(gt, dets, indices)
    assert math.isnan(coco["mAP"][0]) and math.isnan(coco["mAP50"][0]) and math.isnan(kitti[0])
    assert coco["mAP"][1] == pycoco_stats(gt, dets)[0]
    assert kitti[1] == kitti_ap(gt, dets)["kitti_mAP_moderate"]


def test_no_detections_give_zero():
    gt, _ = random_case(4, num_images=6)
    samples = bootstrap_accuracy(gt, [], resamples=5, seed=0)
    for name in ("mAP", "mAP50", "kitti_mAP_moderate"):
        assert (samples[name] == 0.0).all()


def test_inputs_are_not_modified():
    gt, dets = random_case(5, num_images=8)
    before = (repr(gt), repr(dets))
    bootstrap_accuracy(gt, dets, resamples=3, seed=0)
    assert (repr(gt), repr(dets)) == before


def test_same_seed_same_samples_other_seed_other_samples():
    gt, dets = random_case(6, num_images=15)
    a = bootstrap_accuracy(gt, dets, resamples=20, seed=1)
    b = bootstrap_accuracy(gt, dets, resamples=20, seed=1)
    c = bootstrap_accuracy(gt, dets, resamples=20, seed=2)
    for name in ("mAP", "mAP50", "kitti_mAP_moderate"):
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
    jk = resampled_accuracy(gt, dets, resamples=1)
    intervals = [accuracy_intervals(x, jk.point, jk.jackknife) for x in (a, b, c)]
    assert intervals[0] == intervals[1] != intervals[2]


def test_paired_interval_of_a_model_against_itself_is_zero():
    gt, dets = random_case(7, num_images=15)
    samples = bootstrap_accuracy(gt, dets, resamples=200, seed=0)
    point = float(pycoco_stats(gt, dets)[0])
    assert paired_delta(samples, samples, point, point) == {
        "delta_mAP": 0.0,
        "delta_mAP_ci95_low": 0.0,
        "delta_mAP_ci95_high": 0.0,
    }


def test_paired_interval_of_a_worse_model_is_below_zero():
    gt, dets = random_case(8, num_images=30)
    worse = [{**d, "score": d["score"] * 0.5} if i % 3 else d for i, d in enumerate(dets)]
    variant = bootstrap_accuracy(gt, worse, resamples=200, seed=0)
    control = bootstrap_accuracy(gt, dets, resamples=200, seed=0)
    delta = paired_delta(variant, control, 0.2, 0.3)
    assert delta["delta_mAP"] == pytest.approx(-0.1)
    assert delta["delta_mAP_ci95_low"] <= delta["delta_mAP_ci95_high"]
    low, high = percentile_ci(variant["mAP"] - control["mAP"])
    assert (delta["delta_mAP_ci95_low"], delta["delta_mAP_ci95_high"]) == (low, high)


def test_paired_samples_of_different_shapes_are_rejected():
    a = {"mAP": np.zeros(200)}
    with pytest.raises(BootstrapError, match="same resamples"):
        paired_delta(a, {"mAP": np.zeros(100)}, 0.0, 0.0)
    with pytest.raises(BootstrapError, match="same resamples"):
        paired_delta(a, {"mAP": np.zeros((200, 1))}, 0.0, 0.0)


def test_percentile_interval_drops_undefined_resamples():
    values = np.array([np.nan, *np.linspace(0.0, 1.0, 101), np.nan])
    assert percentile_ci(values) == pytest.approx((0.025, 0.975))
    assert percentile_ci(values, level=0.5) == pytest.approx((0.25, 0.75))
    low, high = percentile_ci([np.nan, np.nan])
    assert math.isnan(low) and math.isnan(high)
    with pytest.raises(BootstrapError, match="level"):
        percentile_ci(values, level=1.0)


def test_median_interval_of_latencies():
    assert median_ci([4.0] * 7) == (4.0, 4.0)
    times = np.random.default_rng(0).normal(10.0, 1.0, size=50)
    low, high = median_ci(times, resamples=500, seed=3)
    assert low < np.median(times) < high
    assert median_ci(times, resamples=500, seed=3) == (low, high)
    with pytest.raises(BootstrapError, match="times_ms"):
        median_ci([])
    with pytest.raises(BootstrapError, match="times_ms"):
        median_ci([1.0, math.nan])


def test_indices_out_of_range_are_rejected():
    gt, dets = random_case(9, num_images=3)
    with pytest.raises(BootstrapError, match="indices"):
        coco_resampled(gt, dets, np.array([[0, 3, 1]]))
    with pytest.raises(BootstrapError, match="indices"):
        kitti_resampled(gt, dets, np.array([0, 1, 2]))


# The interval methods, against references computed here (statistics.NormalDist, not scipy).

PHI = NormalDist()


def bca_reference(samples, point, jackknife, level=0.95):
    """BCa from its textbook formula, step by step."""
    samples = np.asarray(samples, dtype=float)
    share = (np.sum(samples < point) + 0.5 * np.sum(samples == point)) / samples.size
    z0 = PHI.inv_cdf(share)
    jk = np.asarray(jackknife, dtype=float)
    d = jk.mean() - jk
    a = np.sum(d**3) / (6 * np.sum(d**2) ** 1.5)
    ends = []
    for tail in ((1 - level) / 2, (1 + level) / 2):
        z = PHI.inv_cdf(tail)
        ends.append(np.percentile(samples, 100 * PHI.cdf(z0 + (z0 + z) / (1 - a * (z0 + z)))))
    return tuple(ends)


def test_basic_interval_reflects_the_percentile_quantiles_and_stays_in_range():
    samples = np.array([np.nan, *np.linspace(0.2, 0.6, 101)])
    q_low, q_high = 0.21, 0.59  # the 2.5 and 97.5 % quantiles of the 101 values
    assert percentile_ci(samples) == pytest.approx((q_low, q_high))
    assert basic_ci(samples, 0.3) == pytest.approx((0.6 - q_high, 0.6 - q_low))
    # Reflected below 0: clipped to [0, 1] by default, since no AP lies outside it.
    assert basic_ci(samples, 0.2, bounds=None) == pytest.approx((0.4 - q_high, 0.4 - q_low))
    assert basic_ci(samples, 0.2) == pytest.approx((0.0, 0.4 - q_low))
    assert basic_ci(samples + 0.4, 0.95) == pytest.approx((1.9 - q_high - 0.4, 1.0))
    assert basic_ci(samples, 0.3, level=0.5) == pytest.approx((0.6 - 0.5, 0.6 - 0.3))
    low, high = basic_ci([np.nan], 0.3)
    assert math.isnan(low) and math.isnan(high)
    low, high = basic_ci(samples, math.nan)
    assert math.isnan(low) and math.isnan(high)


def test_bca_without_bias_or_acceleration_is_the_percentile_interval():
    """The point is the samples' median (the sample equal to it counts half: z0 = 0) and the
    jackknife is symmetric (a = 0)."""
    samples = np.linspace(0.1, 0.5, 201) ** 1.5  # skewed, median at the 101st value
    point = float(np.median(samples))
    assert bca_acceleration([0.2, 0.3, 0.4, 0.5]) == pytest.approx(0.0, abs=1e-15)
    for level in (0.95, 0.8):
        expected = percentile_ci(samples, level)
        got = bca_ci(samples, point, [0.2, 0.3, 0.4, 0.5], level)
        assert got == pytest.approx(expected, rel=1e-12)
        assert got == pytest.approx(bca_reference(samples, point, [0.2, 0.3, 0.4, 0.5], level))


def test_bca_corrects_the_bootstrap_that_sits_above_the_point():
    """Resamples mostly above the point (AP's upward bias on duplicated images): z0 < 0, and
    the interval moves below the percentile one, as the basic interval does."""
    samples = np.random.default_rng(0).normal(0.33, 0.02, size=2000)
    point, jackknife = 0.32, [0.3, 0.31, 0.31, 0.32, 0.33]
    low, high = bca_ci(samples, point, jackknife)
    p_low, p_high = percentile_ci(samples)
    b_low, b_high = basic_ci(samples, point)
    assert low < p_low and high < p_high
    assert (low, high) == pytest.approx(bca_reference(samples, point, jackknife), rel=1e-12)
    assert (low, high) == pytest.approx((b_low, b_high), abs=0.005)  # near-normal samples
    # And the other way for a bootstrap below the point.
    low, high = bca_ci(samples, 0.34, jackknife)
    assert low > p_low and high > p_high


def test_bca_acceleration_from_a_skewed_jackknife():
    jackknife = [0.0, 0.0, 0.0, 1.0, np.nan]  # the NaN (undefined leave-one-out) is dropped
    d = np.array([0.25, 0.25, 0.25, -0.75])
    assert bca_acceleration(jackknife) == pytest.approx(np.sum(d**3) / (6 * 0.75**1.5))
    samples = np.linspace(0.0, 1.0, 1001)
    got = bca_ci(samples, 0.45, jackknife)
    assert got == pytest.approx(bca_reference(samples, 0.45, jackknife[:4]), rel=1e-12)
    # a < 0 moves both adjusted levels down: the interval lies below the bias-corrected one.
    unaccelerated = bca_ci(samples, 0.45, [0.0, 1.0, 2.0])
    assert got[0] < unaccelerated[0] and got[1] < unaccelerated[1]


def test_bca_degenerate_cases_fall_back_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # All samples equal: the percentile interval's (value, value), whatever the point.
        assert bca_ci([0.4] * 50, 0.3, [0.1, 0.2, 0.3]) == (0.4, 0.4)
        # A constant jackknife, too few values, all NaN: no acceleration.
        for jackknife in ([0.3] * 7, [0.1, 0.2], [np.nan] * 5, []):
            assert bca_acceleration(jackknife) == 0.0
        # A constant jackknife whose mean is not exactly its value in floating point.
        assert bca_acceleration([0.1] * 3) == 0.0
        # The point beyond every sample: z0 as for half a sample beyond, finite.
        samples = np.linspace(0.2, 0.4, 100)
        low, high = bca_ci(samples, 0.1, [0.1, 0.2, 0.3])
        z0 = PHI.inv_cdf(0.5 / 100)
        expected = np.percentile(samples, [100 * PHI.cdf(2 * z0 + z) for z in (-1.96, 1.96)])
        assert (low, high) == pytest.approx(tuple(expected), abs=1e-4)
        assert 0.2 <= low <= high <= 0.4
        # 1 - a (z0 + z) <= 0 (an extreme level and acceleration): a dropped.
        skewed = [0.0] * 1000 + [1.0]
        level = 1 - 1e-9
        assert bca_acceleration(skewed) < -0.16
        assert bca_ci(samples, 0.3, skewed, level) == bca_ci(samples, 0.3, [0.0] * 3, level)
        # Nothing defined: NaN.
        for low, high in (bca_ci([np.nan] * 3, 0.3, [0.1]), bca_ci(samples, math.nan, [0.1])):
            assert math.isnan(low) and math.isnan(high)
    with pytest.raises(BootstrapError, match="level"):
        bca_ci(samples, 0.3, [0.1], level=0.0)


def test_interval_dispatch_by_method():
    samples = np.linspace(0.2, 0.6, 101)
    jackknife = [0.3, 0.35, 0.42]
    assert bootstrap_interval("percentile", samples, 0.3) == percentile_ci(samples)
    assert bootstrap_interval("basic", samples, 0.3) == basic_ci(samples, 0.3)
    assert bootstrap_interval("basic", samples, 0.2, bounds=None) == basic_ci(
        samples, 0.2, bounds=None
    )
    assert bootstrap_interval("bca", samples, 0.3, jackknife) == bca_ci(samples, 0.3, jackknife)
    with pytest.raises(BootstrapError, match="jackknife"):
        bootstrap_interval("bca", samples, 0.3)
    with pytest.raises(BootstrapError, match="unknown interval method"):
        bootstrap_interval("studentized", samples, 0.3)


@pytest.mark.parametrize("ties", [False, True])
def test_jackknife_equals_each_leave_one_out_dataset(ties):
    gt, dets = random_case(10, num_images=9, ties=ties)
    jackknife = resampled_accuracy(gt, dets, resamples=1)
    stats = pycoco_stats(gt, dets)
    assert jackknife.point == {
        "mAP": stats[0],
        "mAP50": stats[1],
        "kitti_mAP_moderate": kitti_ap(gt, dets)["kitti_mAP_moderate"],
    }
    for i in range(9):
        ref_gt, ref_dets = expanded(gt, dets, np.delete(np.arange(9), i))
        ref = pycoco_stats(ref_gt, ref_dets)
        assert jackknife.jackknife["mAP"][i] == ref[0]
        assert jackknife.jackknife["mAP50"][i] == ref[1]
        assert (
            jackknife.jackknife["kitti_mAP_moderate"][i]
            == kitti_ap(ref_gt, ref_dets)["kitti_mAP_moderate"]
        )
    # The (n, n-1) leave-one-out indices through the resampling functions give the same.
    loo = np.array([np.delete(np.arange(9), i) for i in range(9)])
    coco = coco_resampled(gt, dets, loo)
    np.testing.assert_array_equal(coco["mAP"], jackknife.jackknife["mAP"])
    np.testing.assert_array_equal(
        kitti_resampled(gt, dets, loo), jackknife.jackknife["kitti_mAP_moderate"]
    )


def test_jackknife_of_one_image_is_undefined():
    gt, dets = random_case(11, num_images=1)
    assert all(
        math.isnan(v[0]) for v in resampled_accuracy(gt, dets, resamples=1).jackknife.values()
    )


def test_resampled_accuracy_is_the_bootstrap_and_the_jackknife_in_one_pass():
    gt, dets = random_case(12, num_images=25, ties=True)
    both = resampled_accuracy(gt, dets, resamples=50, seed=5)
    samples = bootstrap_accuracy(gt, dets, resamples=50, seed=5)
    jackknife = resampled_accuracy(gt, dets, resamples=1)
    assert both.point == jackknife.point
    for name in METRICS:
        np.testing.assert_array_equal(both.samples[name], samples[name])
        np.testing.assert_array_equal(both.jackknife[name], jackknife.jackknife[name])


def test_accuracy_intervals_are_the_chosen_method_not_the_percentile():
    """metrics.json's intervals: BCa (bench/interval_coverage.md) from the resamples, the
    exact full-set values and the jackknife. On this set the resamples sit above the point
    estimate, and the interval moves below the percentile one."""
    assert INTERVAL_METHOD == "bca"
    gt, dets = random_case(3, num_images=40)
    r = resampled_accuracy(gt, dets, resamples=300, seed=4)
    intervals = accuracy_intervals(r.samples, r.point, r.jackknife)
    for name in METRICS:
        expected = bca_ci(r.samples[name], r.point[name], r.jackknife[name])
        assert (intervals[f"{name}_ci95_low"], intervals[f"{name}_ci95_high"]) == expected
    assert np.mean(r.samples["mAP"]) > r.point["mAP"]
    p_low, p_high = percentile_ci(r.samples["mAP"])
    assert intervals["mAP_ci95_low"] < p_low and intervals["mAP_ci95_high"] < p_high
    for method in ("percentile", "basic"):
        other = accuracy_intervals(r.samples, r.point, method=method)
        low, high = bootstrap_interval(method, r.samples["mAP"], r.point["mAP"])
        assert (other["mAP_ci95_low"], other["mAP_ci95_high"]) == (low, high)
    with pytest.raises(BootstrapError, match="jackknife"):
        accuracy_intervals(r.samples, r.point)


def test_paired_delta_by_method():
    assert DELTA_INTERVAL_METHOD == "percentile"
    variant = {"mAP": np.linspace(0.3, 0.5, 101)}
    control = {"mAP": np.full(101, 0.45)}
    q_low, q_high = 0.3 + 0.005 - 0.45, 0.3 + 0.195 - 0.45
    default = paired_delta(variant, control, 0.4, 0.45)
    assert default["delta_mAP"] == pytest.approx(-0.05)
    assert (default["delta_mAP_ci95_low"], default["delta_mAP_ci95_high"]) == pytest.approx(
        (q_low, q_high)
    )
    basic = paired_delta(variant, control, 0.4, 0.45, method="basic")
    assert (basic["delta_mAP_ci95_low"], basic["delta_mAP_ci95_high"]) == pytest.approx(
        (-0.1 - q_high, -0.1 - q_low)
    )
    with pytest.raises(BootstrapError, match="percentile or basic"):
        paired_delta(variant, control, 0.4, 0.45, method="bca")
